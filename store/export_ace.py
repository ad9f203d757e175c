"""Export a shard set to the official ACE++ training list format, with the image files beside it.

One line per sample and no header (the released reader takes every line as a sample), fields joined by `#;#`
in the order of the released training configs' FIELDS (`FIELDS` below):
    edit_image #;# edit_mask #;# ref_image #;# target_image #;# prompt #;# data_type
The released reader resolves each path with `osp_path(PATH_PREFIX, path)` against the trainer's working
directory, and the released configs ship `PATH_PREFIX: ""`: so paths are absolute by default, and with
`relative=True` relative to the list's folder, which must then be given as PATH_PREFIX (`ExportReport.path_prefix`).
A folder path holding the separator or a line break cannot be written as an absolute row. An absent field is empty. A
sample with no mask on its edit unit gets an all-255 mask (regenerate everywhere: instruction edits change the
whole image). ACE++ takes one reference image, so samples with more are skipped and counted. data_type carries
the aceforge task name.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from mining.image.decode import encode_mask
from schemas.records import AceSample, ConditionUnit, Role
from schemas.shard_layout import sanitize_key
from store.shard_reader import read_shard_set

SEP = "#;#"
FIELDS = ("edit_image", "edit_mask", "ref_image", "target_image", "prompt", "data_type")


@dataclass
class ExportReport:
    list_path: str
    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    path_prefix: str = ""  # the PATH_PREFIX the released config needs for these rows ("" : as shipped)


def _full_mask(unit: ConditionUnit) -> bytes:
    w, h = Image.open(io.BytesIO(unit.image)).size
    return encode_mask(Image.new("L", (w, h), 255))


def _row(sample: AceSample, out: Path, base: str) -> list[str]:
    key = sanitize_key(sample.key)
    folder = out / "images" / key
    folder.mkdir(parents=True, exist_ok=True)

    def put(name: str, data: bytes) -> str:
        (folder / name).write_bytes(data)
        return f"{base}images/{key}/{name}"

    edit = next((u for u in sample.units if u.role is Role.EDIT), None)
    ref = next((u for u in sample.units if u.role is Role.REFERENCE), None)
    edit_path = put(f"edit.{edit.image_ext}", edit.image) if edit else ""
    mask_path = put("edit_mask.png", edit.mask if edit.mask is not None else _full_mask(edit)) if edit else ""
    ref_path = put(f"ref.{ref.image_ext}", ref.image) if ref else ""
    target_path = put(f"target.{sample.target.image_ext}", sample.target.image)
    prompt = " ".join(sample.instruction.split())
    return [edit_path, mask_path, ref_path, target_path, prompt, sample.task]


def export_ace_plus(shard_uri: str, out_dir: str | Path, relative: bool = False) -> ExportReport:
    """Write `out_dir/train.csv` and `out_dir/images/`; rows hold absolute paths unless `relative`."""
    out = Path(out_dir).resolve()
    folder = out.as_posix() + "/"
    if not relative and (SEP in folder or "\n" in folder or "\r" in folder):
        raise ValueError(f"{out}: an absolute row cannot hold a folder path containing {SEP!r} or a line break; "
                         f"choose another folder or export with relative paths")
    base = "" if relative else folder
    out.mkdir(parents=True, exist_ok=True)
    list_path = out / "train.csv"
    tmp = list_path.with_suffix(".csv.tmp")
    skipped: Counter[str] = Counter()
    written = 0
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for sample in read_shard_set(shard_uri, verify=True):  # checksums first: a damaged shard fails
                if sum(u.role is Role.REFERENCE for u in sample.units) > 1:
                    skipped["more_than_one_reference"] += 1
                    continue
                if SEP in sample.instruction:
                    skipped["separator_in_prompt"] += 1
                    continue
                f.write(SEP.join(_row(sample, out, base)) + "\n")
                written += 1
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written list left behind
        raise
    tmp.replace(list_path)
    return ExportReport(str(list_path), written, dict(skipped), str(out) if relative else "")
