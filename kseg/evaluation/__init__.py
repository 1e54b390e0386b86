"""Evaluation of proposal and detection models with the COCO API (``kseg.evaluation.coco_eval``)."""
