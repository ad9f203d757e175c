"""Face buckets: every face of the faces stage in one bucket or a few (stages/synthesis/buckets.py), the units
of the face-pair stage.

    <root>/synth/face_buckets/quantiser.parquet                  the mean and centroids, kept
    <root>/synth/face_buckets/part-NNNNN-<digest>/buckets.parquet  one faces part's faces, one row per bucket

The vectors are the unit dlib descriptors; carried beside them: the source id, landmarks and image size (what
the pair checks read), so a pair unit reads its bucket only. Buckets: ceil(faces / `faces.bucket_faces`);
`faces.bucket_spill` and `faces.bucket_max_extra` put a face near a boundary in more than one bucket.
"""

from __future__ import annotations

from stages.synthesis.buckets import BucketsStage
from schemas.layout import SynthFiles


class FaceBucketsStage(BucketsStage):
    name = "synth-face-buckets"
    kind = "face_buckets"
    needs = ("synth-faces",)
    key, config_section = "face_buckets", "synthesis.faces"
    source_table, vector, source_count = SynthFiles.FACES, "descriptor", "faces"
    carried = ("source_id", "landmarks", "height", "width")

    @property
    def source_dir(self) -> str:
        from stages.synthesis.faces import FacesStage

        return self.layout.synth(FacesStage.kind)

    def bucketing(self) -> dict:
        f = self.cfg.synthesis.faces
        return {"bucket_rows": f.bucket_faces, "fit_sample": f.fit_sample, "spill": f.bucket_spill,
                "max_extra": f.bucket_max_extra}
