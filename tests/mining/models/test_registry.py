from mining.faces.face import face_model_paths
from mining.models.registry import model_status
from schemas.config import MiningConfig, RunConfig


def test_presence_follows_the_files(tmp_path):
    cfg = RunConfig(models_dir=str(tmp_path))
    before = {m.name: m for m in model_status(cfg)}
    assert not any(m.present for m in before.values())
    assert "pass-through" in before["pair classifier"].fallback
    for p in face_model_paths(tmp_path):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    after = {m.name: m.present for m in model_status(cfg)}
    assert after["ArcFace-compatible face model"] and not after["ViT-B-16-SigLIP (open_clip)"]
    named = RunConfig(models_dir=str(tmp_path), mining=MiningConfig(pair_classifier="pc/general.safetensors"))
    cls = next(m for m in model_status(named) if m.name == "pair classifier")
    assert cls.files == (tmp_path / "pc" / "general.safetensors",) and not cls.present


def test_synthesis_models_are_listed_with_their_fallbacks(tmp_path):
    from mining.objects.inpaint import lama_path

    cfg = RunConfig(models_dir=str(tmp_path))
    status = {m.name.split(" (")[0]: m for m in model_status(cfg)}
    assert not status["SAM vit_b"].present and "regions-felzenszwalb" in status["SAM vit_b"].fallback
    assert "cv2-inpaint-telea" in status["big-lama TorchScript"].fallback
    lama_path(tmp_path).parent.mkdir(parents=True)
    lama_path(tmp_path).write_bytes(b"x")
    assert {m.name.split(" (")[0]: m.present for m in model_status(cfg)}["big-lama TorchScript"]


def test_mediapipe_models_are_listed(tmp_path):
    from mining.models.mediapipe import mediapipe_dir

    cfg = RunConfig(models_dir=str(tmp_path))
    status = {m.name.split(" (")[0]: m for m in model_status(cfg)}
    pose, selfie = status["MediaPipe BlazePose full"], status["MediaPipe selfie segmentation"]
    assert not pose.present and not selfie.present and "mining.models.mediapipe fetch" in pose.fallback
    assert [p.name for p in pose.files] == ["pose_detection.tflite", "pose_landmark_full.tflite"]
    mediapipe_dir(tmp_path).mkdir(parents=True)
    (mediapipe_dir(tmp_path) / "selfie_segmentation.tflite").write_bytes(b"x")
    status = {m.name.split(" (")[0]: m.present for m in model_status(cfg)}
    assert status["MediaPipe selfie segmentation"] and not status["MediaPipe BlazePose full"]
