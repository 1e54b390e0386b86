"""The app-facing side of a kseg ``.tflite`` file: image in, per-pixel labels out.

:class:`Segmenter` is what the Python side of a mobile pipeline (or a test of one) calls. It needs
only LiteRT (``ai-edge-litert``), numpy and Pillow, not TensorFlow or Keras, and it handles what
an app has to handle around the file: resizing to the file's input size and back, the input dtype
(float32, uint8 or int8) with the file's quantisation scale and zero point, and the argmax.

Files come from :func:`kseg.export.export_tflite` (or ``kseg export MODEL --format tflite
[--quantize none|float16|dynamic|int8]``). Their input is one RGB image in [0, 255],
``(1, H, W, 3)``; their output the class scores ``(1, H, W, C)`` (logits; dequantise int8).

Using the same file on a phone
-------------------------------
Android (Kotlin/Java, LiteRT / TensorFlow Lite runtime ``org.tensorflow.lite``): put the file in
``assets/``, then ``val interpreter = Interpreter(loadModelFile("segnet_basic.tflite"),
Interpreter.Options().setNumThreads(2))`` (XNNPACK is on by default). Read the input tensor with
``interpreter.getInputTensor(0)``: its ``shape()`` is ``[1, H, W, 3]``, ``dataType()`` FLOAT32 or
UINT8/INT8 and ``quantizationParams()`` the scale / zero point. Fill a direct ``ByteBuffer`` with
the resized RGB pixels (for a uint8 file with scale 1 and zero point 0, the raw camera bytes), call
``interpreter.run(input, output)`` with an output buffer of ``[1, H, W, C]`` and take the argmax
over C per pixel (dequantise first only if you need scores; the argmax is the same).

iOS (Swift, ``TensorFlowLiteSwift`` / LiteRT pod): ``let interpreter = try Interpreter(modelPath:
path, options: opts)`` with ``opts.threadCount = 2``; ``try interpreter.allocateTensors()``;
``try interpreter.copy(rgbData, toInputAt: 0)``; ``try interpreter.invoke()``;
``let out = try interpreter.output(at: 0)``. ``interpreter.input(at: 0).quantizationParameters``
gives the scale and zero point; ``out.data`` holds ``H * W * C`` scores (float32 or int8/uint8).

The steps are exactly those of :meth:`Segmenter.segment`, so this class doubles as the reference
an app's output can be checked against.

Example:
    >>> from kseg.lite import Segmenter
    >>> segmenter = Segmenter("segnet_basic_int8.tflite", num_threads=2)   # doctest: +SKIP
    >>> labels = segmenter.segment(image)    # (H0, W0) int32 at the image's own size  # doctest: +SKIP
"""

import pathlib

import numpy as np

__all__ = ["Segmenter"]


class Segmenter:
    """Runs a kseg ``.tflite`` segmentation file on single images with LiteRT.

    Args:
        path: the ``.tflite`` file.
        num_threads: LiteRT (XNNPACK) threads; ``None`` for the runtime's default.

    Attributes:
        input_size: ``(H, W)`` the file was exported at.
        num_classes: classes in the output.
        input_dtype: numpy dtype of the input tensor (float32, uint8 or int8).
    """

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        path = pathlib.Path(path)
        if not path.is_file():
            raise ValueError(f"no TFLite file at {str(path)!r}")
        self.path = str(path)
        self._interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        self._interpreter.allocate_tensors()
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self._in, self._out = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self._in["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise ValueError(f"{self.path}: expected a (1, H, W, 3) image input, got {shape}")
        self.input_size = shape[1:3]
        self.num_classes = int(self._out["shape"][-1])
        self.input_dtype = np.dtype(self._in["dtype"])

    def __repr__(self):
        return (f"Segmenter({self.path!r}, input_size={self.input_size}, num_classes={self.num_classes}, "
                f"input_dtype={self.input_dtype.name})")

    # -- steps an app performs ----------------------------------------------------------------

    def preprocess(self, image):
        """RGB image ``(H0, W0, 3)`` (uint8, or float in [0, 255]) -> the file's input tensor."""
        image = np.asarray(image)
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image must be (height, width, 3) RGB, got shape {image.shape}")
        x = image.astype(np.float32)
        if image.shape[:2] != self.input_size:
            x = _resize(x, self.input_size, nearest=False)
        if np.issubdtype(self.input_dtype, np.floating):
            return x[None].astype(self.input_dtype)
        scale, zero = self._in["quantization"]
        info = np.iinfo(self.input_dtype)
        q = np.round(x / (scale or 1.0) + zero)
        return np.clip(q, info.min, info.max).astype(self.input_dtype)[None]

    def scores(self, image):
        """Float class scores (logits, dequantised) ``(H, W, C)`` at the file's input size."""
        self._interpreter.set_tensor(self._in["index"], self.preprocess(image))
        self._interpreter.invoke()
        y = self._interpreter.get_tensor(self._out["index"])[0]
        if np.issubdtype(y.dtype, np.floating):
            return y.astype(np.float32)
        scale, zero = self._out["quantization"]
        return (y.astype(np.float32) - zero) * (scale or 1.0)

    def segment(self, image, resize_back=True):
        """Per-pixel class labels of one RGB image.

        Args:
            image: ``(H0, W0, 3)`` RGB, uint8 or float in [0, 255] (any size: it is resized to
                the file's input size).
            resize_back: return labels at ``(H0, W0)`` (nearest neighbour) instead of the file's size.

        Returns:
            int32 labels ``(H0, W0)`` (or ``(H, W)`` with ``resize_back=False``).
        """
        image = np.asarray(image)
        labels = np.argmax(self.scores(image), axis=-1).astype(np.int32)
        size = tuple(image.shape[-3:-1])
        if resize_back and size != self.input_size:
            labels = _resize(labels, size, nearest=True)
        return labels


def _resize(array, size, nearest):
    """Resize an (H, W[, C]) array to `size` with Pillow (bilinear for images, nearest for labels)."""
    from PIL import Image

    h, w = size
    if nearest:
        return np.asarray(Image.fromarray(array.astype(np.int32)).resize((w, h), Image.NEAREST), dtype=np.int32)
    channels = [np.asarray(Image.fromarray(array[..., c].astype(np.float32)).resize((w, h), Image.BILINEAR))
                for c in range(array.shape[-1])]
    return np.stack(channels, axis=-1).astype(np.float32)
