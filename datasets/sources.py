"""The data sources by name, and the one place that picks one from the `data` section.

`data.format` names the source; its default, `files`, means the list's frame folders or video
files, as `data.modality` says. Adding a source: one module and one line in `SOURCES` (and its
name among `data.format`'s choices); docs/data.md "Adding a data source"."""

from __future__ import annotations

from collections.abc import Collection

from datasets.source_base import DataSource, SourceOpener
from datasets.source_frames import FrameFolderSource
from datasets.source_shards import TarShardSource
from datasets.source_videos import VideoFileSource
from utils.config_schema import DataConfig
from utils.errors import UserError

SOURCES: dict[str, SourceOpener] = {
    "frames": FrameFolderSource,
    "videos": VideoFileSource,
    "shards": TarShardSource,
}
FILE_SOURCES = {"RGB": "frames", "video": "videos"}  # data.format: files, by data.modality


def source_name(data: DataConfig) -> str:
    """The registered name of the source the `data` section asks for."""
    return FILE_SOURCES[data.modality] if data.format == "files" else str(data.format)


def open_source(data: DataConfig, split: str, allow_pipe: Collection[str] = ()) -> DataSource:
    """The source of `split`, opened (its list or index named and checked)."""
    name = source_name(data)
    if name not in SOURCES:
        raise UserError(f"data.format {data.format!r} names no data source (datasets.sources: {', '.join(SOURCES)})")
    return SOURCES[name](data, split, allow_pipe)
