"""Image files to uint8 RGB tensors for the device input pipeline, without ever raising on bad files.

Two routes, chosen from a file's first bytes (`sniff`, no decoding):
- 8-bit, 3-component baseline or extended-sequential JPEGs (ImageNet's files) are handed back as
  byte tensors and decoded a batch at a time by `decode_jpeg_batch`, on the device, by one of
  JPEG_DECODERS: torchvision's decode_jpeg (nvJPEG on a GPU) or nvImageCodec (its hardware
  decoder on a GPU that has one); on a CPU both decode on the CPU, so CI runs this route too;
- everything else (PNG, grayscale and CMYK JPEGs, progressive JPEGs, BMP/TIFF/WebP, files whose
  header cannot be parsed) is decoded on the CPU in the reader thread by `decode_on_cpu`:
  torchvision's `decode_image(mode=RGB)`, Pillow for the formats torchvision does not read.
A file that neither route decodes (zero bytes, truncated, not an image, larger than `max_pixels`)
is reported once through `SkipLog` (logging.warning, once per path) and left out; the caller
decides how to fill its place.
"""
import collections
import io
import logging
import threading
from typing import NamedTuple, Optional

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

logger = logging.getLogger(__name__)

# JPEG start-of-frame markers (ITU T.81, B.1.1.3): C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_BATCH_DECODABLE_SOF = frozenset({0xC0, 0xC1})  # baseline and extended sequential Huffman
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Header(NamedTuple):
    """What a file's first bytes say: its size where the format tells it, and its route."""

    height: Optional[int]
    width: Optional[int]
    batch_decodable: bool  # an 8-bit 3-component sequential JPEG: decode_jpeg_batch's route


class ReadFile(NamedTuple):
    """A file as a reader thread hands it over: JPEG bytes for the batched decoder, or an image."""

    path: str
    jpeg: Optional[torch.Tensor]  # uint8 bytes, for decode_jpeg_batch
    image: Optional[torch.Tensor]  # (3, H, W) uint8, already decoded on the CPU


class SkipLog:
    """The files left out, each reported once with logging.warning; safe to share between threads."""

    def __init__(self):
        self._paths: set = set()
        self._lock = threading.Lock()

    def __contains__(self, path) -> bool:
        return path in self._paths

    def __len__(self) -> int:
        return len(self._paths)

    def report(self, path: str, reason: str) -> None:
        with self._lock:
            if path in self._paths:
                return
            self._paths.add(path)
        logger.warning("skipping image %s: %s", path, reason)


def sniff(data: bytes) -> Header:
    """The header of a JPEG (frame size, whether decode_jpeg_batch may take it) or PNG (size)."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_header(data)
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return Header(int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big"), False)
    return Header(None, None, False)


def _jpeg_header(data: bytes) -> Header:
    """Walk the marker segments up to the first frame header (SOFn) and read it."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break  # not a marker where one must be: a damaged file, leave it to the CPU decoder
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS:
            if pos + 10 > len(data):
                break
            precision, components = data[pos + 4], data[pos + 9]
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            sequential_rgb = marker in _BATCH_DECODABLE_SOF and precision == 8 and components == 3
            return Header(height, width, sequential_rgb and height > 0 and width > 0)
        pos += 2 + length
    return Header(None, None, False)


def read_image_file(path: str, skip_log: SkipLog, max_pixels: int, pin_memory: bool) -> Optional[ReadFile]:
    """Read one file (a reader thread's job): JPEG bytes for the batched decoder, else decode it on
    the CPU (pinned when the batch goes to a GPU); None, reported once, for a file left out."""
    if path in skip_log:
        return None
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        skip_log.report(path, f"unreadable ({error})")
        return None
    if data.size == 0:
        skip_log.report(path, "empty file")
        return None
    header = sniff(data.tobytes())  # the whole file: EXIF and ICC segments may push the frame header far in
    if header.height is not None and header.height * header.width > max_pixels:
        skip_log.report(path, f"{header.height}x{header.width} pixels exceed max_pixels={max_pixels}")
        return None
    if header.batch_decodable:
        return ReadFile(path, torch.from_numpy(data), None)
    image = decode_on_cpu(path, torch.from_numpy(data), skip_log, max_pixels)
    if image is None:
        return None
    return ReadFile(path, None, image.pin_memory() if pin_memory else image)


def decode_on_cpu(path: str, data: torch.Tensor, skip_log: SkipLog, max_pixels: int) -> Optional[torch.Tensor]:
    """(3, H, W) uint8 RGB from any image file torchvision or Pillow reads; None (reported) else."""
    try:
        image = _decode_any(data)
    except Exception as error:  # noqa: BLE001  (decoders raise many kinds for bad files)
        skip_log.report(path, f"not decodable ({type(error).__name__}: {error})")
        return None
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] == 0 or image.shape[2] == 0:
        skip_log.report(path, f"decoded to an unusable shape {tuple(image.shape)}")
        return None
    if image.shape[1] * image.shape[2] > max_pixels:
        skip_log.report(path, f"{image.shape[1]}x{image.shape[2]} pixels exceed max_pixels={max_pixels}")
        return None
    return image


def _decode_any(data: torch.Tensor) -> torch.Tensor:
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError:  # a format torchvision does not decode (BMP, TIFF, PPM), or a bad file
        with Image.open(io.BytesIO(data.numpy().tobytes())) as pil_image:
            image = torch.from_numpy(np.array(pil_image.convert("RGB"))).permute(2, 0, 1).contiguous()
    if image.dim() == 4:  # an animated image: its first frame, as Pillow's convert takes
        image = image[0]
    return image if image.dtype == torch.uint8 else TF.to_dtype(image, torch.uint8, scale=True)


class TorchvisionJpegDecoder:
    """torchvision.io.decode_jpeg: nvJPEG's CUDA decoder on a GPU (the call returns once its stream
    is done), libjpeg-turbo on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def decode(self, jpegs: list) -> list:
        """(3, H, W) uint8 RGB images on the device, None where a file cannot be decoded. One bad
        file fails torchvision's batched call: then the files are decoded one by one."""
        try:
            return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device)
        except Exception:  # noqa: BLE001  (find the bad ones below)
            return [self._decode_one(jpeg) for jpeg in jpegs]

    def _decode_one(self, jpeg):
        try:
            return decode_jpeg(jpeg, mode=ImageReadMode.RGB, device=self.device)
        except Exception:  # noqa: BLE001
            return None

    def done_with(self, images: list) -> None:
        """Its images live in PyTorch's allocator, which orders their reuse by stream itself."""


class NvImageCodecJpegDecoder:
    """nvImageCodec (package nvidia-nvimgcodec-cu13): on a GPU, the hardware JPEG decoder where the
    GPU has one (A100, H100: engines beside the SMs, so decoding leaves the training kernels their
    SMs) with nvJPEG's CUDA and hybrid decoders as fall-backs, asynchronous on the caller's stream;
    on a CPU, libjpeg-turbo with `cpu_threads` threads (0: one per core)."""

    def __init__(self, device: torch.device, cpu_threads: int = 0):
        nvimgcodec = import_nvimgcodec()
        kinds = nvimgcodec.BackendKind
        if device.type == "cuda":
            backends = (kinds.HW_GPU_ONLY, kinds.GPU_ONLY, kinds.HYBRID_CPU_GPU, kinds.CPU_ONLY)
            device_id = device.index if device.index is not None else torch.cuda.current_device()
        else:
            backends, device_id = (kinds.CPU_ONLY,), nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY
        self.device, self._nvimgcodec = device, nvimgcodec
        self._decoder = nvimgcodec.Decoder(device_id=device_id, max_num_cpu_threads=cpu_threads,
                                           backends=[nvimgcodec.Backend(kind) for kind in backends])
        # Planar RGB is (3, H, W): what the pipeline pads. EXIF orientation is left alone, as
        # torchvision's decode_jpeg leaves it, so both decoders give the same images.
        self._params = nvimgcodec.DecodeParams(apply_exif_orientation=False, color_spec=nvimgcodec.ColorSpec.SRGB,
                                               allow_any_depth=False, sample_format=nvimgcodec.SampleFormat.P_RGB)
        self._lock = threading.Lock()  # one decode at a time per decoder
        self._held = collections.deque()  # (event, images) whose reads are queued on a stream

    def decode(self, jpegs: list) -> list:
        """As TorchvisionJpegDecoder.decode; on a GPU the images are ready in the caller's current
        stream's order, and their memory is nvImageCodec's: pass them to done_with after use."""
        streams = [self._nvimgcodec.CodeStream(jpeg.numpy()) for jpeg in jpegs]
        with self._lock:
            if self.device.type == "cuda":
                stream = torch.cuda.current_stream(self.device).cuda_stream
                images = self._decoder.decode(streams, params=self._params, cuda_stream=stream)
            else:
                images = self._decoder.decode(streams, params=self._params)
        return [None if image is None else self._as_tensor(image) for image in images]

    def _as_tensor(self, image) -> torch.Tensor:
        if self.device.type == "cuda":
            return torch.from_dlpack(image)  # made ready on the current stream (DLPack's stream argument)
        return torch.from_numpy(np.asarray(image))  # the array keeps nvImageCodec's host buffer alive

    def done_with(self, images: list) -> None:
        """The kernels that read `images` are queued on the current stream: keep nvImageCodec's
        buffers until they have run (PyTorch's record_stream cannot track memory it did not
        allocate), and let go of those whose readers have finished."""
        if self.device.type != "cuda":
            return
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self._held.append((event, images))
        while self._held and self._held[0][0].query():
            self._held.popleft()


JPEG_DECODERS = ("torchvision", "nvimgcodec")


def jpeg_decoder(name: str, device: torch.device, cpu_threads: int = 0):
    """The JPEG decoder called `name` (one of JPEG_DECODERS) for `device`; cpu_threads: the CPU
    threads nvImageCodec may use (0: one per core)."""
    if name == "torchvision":
        return TorchvisionJpegDecoder(device)
    if name == "nvimgcodec":
        return NvImageCodecJpegDecoder(device, cpu_threads)
    raise ValueError(f"decoder must be one of {JPEG_DECODERS}, got {name!r}")


def import_nvimgcodec():
    """nvImageCodec's module, or a ValueError that says how to install it."""
    try:
        from nvidia import nvimgcodec
    except ImportError as error:
        raise ValueError("decoder='nvimgcodec' needs nvImageCodec: pip install 'nvidia-nvimgcodec-cu13[nvjpeg]' "
                         f"({error})") from None
    return nvimgcodec


def decode_jpeg_batch(files: list, decoder, skip_log: SkipLog, max_pixels: int) -> list:
    """Decode the `jpeg` bytes of `files` in one batched call of `decoder` (from jpeg_decoder): a
    list of (3, H, W) uint8 on its device, None where a file was left out. A file the decoder
    rejects still gets the CPU decoders."""
    if not files:
        return []
    images = decoder.decode([f.jpeg for f in files])
    return [image if image is not None else _decode_on_cpu_instead(f, decoder.device, skip_log, max_pixels)
            for f, image in zip(files, images)]


def _decode_on_cpu_instead(file: ReadFile, device: torch.device, skip_log: SkipLog, max_pixels: int):
    image = decode_on_cpu(file.path, file.jpeg, skip_log, max_pixels)
    return None if image is None else image.to(device)
