"""Video I/O, image helpers, latent codecs, per-frame stylizers, latent cache and the stylization pipeline."""

from pipeline.cache import LatentCache
from pipeline.codecs import CODEC_NAMES, DiffusersCodec, LatentCodec, TAEF2Codec, load_codec
from pipeline.images import (
    ImageReadError,
    fit_to_multiple,
    load_image,
    resize_to_width,
    restore_size,
    save_image,
    save_image_grid,
    to_uint8,
)
from pipeline.stylize import StylizationPipeline, StylizedClip
from pipeline.video_io import VideoInfo, VideoReadError, VideoWriter, iter_video_chunks, read_video, video_info, write_video
from pipeline.weights import WeightsNotFoundError, weight_path

__all__ = [
    "CODEC_NAMES", "DiffusersCodec", "ImageReadError", "LatentCache", "LatentCodec", "StylizationPipeline",
    "StylizedClip", "TAEF2Codec", "VideoInfo", "VideoReadError", "VideoWriter", "WeightsNotFoundError",
    "fit_to_multiple", "iter_video_chunks", "load_codec", "load_image", "read_video", "resize_to_width",
    "restore_size", "save_image", "save_image_grid", "to_uint8", "video_info", "weight_path", "write_video",
]
