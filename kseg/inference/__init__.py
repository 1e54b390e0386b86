"""Full-image inference of the proposal and detection models.

``kseg.inference.proposals`` holds DeepMask/SharpMask full-scene inference; its entry point is
exported as ``kseg.proposals(model, image, ...)``.
"""
