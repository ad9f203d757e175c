"""BlazePose's pre/post-processing as MediaPipe's pose graphs configure it, in numpy.

Detector (pose_detection.tflite, 224x224, RGB in [-1, 1], letterboxed): 2254 SSD anchors (5 layers, strides
8/16/32/32/32, fixed anchor size, two anchors per layer and location, same-stride layers merged); per anchor 12
values: box (x, y, w, h; offsets in input pixels from the anchor centre) and 4 keypoints (0 mid-hip, 1 a point
whose distance to 0 encodes the full-body size and whose direction encodes rotation, 2 mid-shoulder, 3 the same
for the upper body); a logit score. Weighted NMS at IoU 0.3.
ROI: centred on keypoint 0, side 2*|kp1 - kp0|, rotated so kp0->kp1 points up, scaled 1.25, square in pixels.
Landmarks (pose_landmark_full.tflite, the ROI warped to 256x256, RGB in [0, 1]): 39 x (x, y, z, visibility
logit, presence logit), x/y in crop pixels; 33 are the body landmarks; a 64x64x39 heatmap refines x/y in a 7x7
window where its sigmoid peak reaches 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DETECT_SIZE = 224
LANDMARK_SIZE = 256
STRIDES = (8, 16, 32, 32, 32)
NMS_IOU = 0.3
ROI_SCALE = 1.25
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONF = 0.5


def ssd_anchors(size: int = DETECT_SIZE, strides: tuple[int, ...] = STRIDES) -> np.ndarray:
    """Anchor centres (n, 2) as (x, y) in [0, 1]; consecutive layers of one stride share a feature map, each
    layer adding two anchors (aspect 1 and the interpolated scale) per location."""
    out, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        fm = int(np.ceil(size / strides[i]))
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, 2 * (j - i), axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


ANCHORS = ssd_anchors()


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # (4,) xmin, ymin, xmax, ymax, normalised to the original image
    keypoints: np.ndarray  # (4, 2) x, y normalised to the original image
    score: float


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Fit the image into size x size keeping its aspect ratio, centred on black; returns it and the padding
    (left, top, right, bottom) as fractions of `size`."""
    import cv2

    h, w = rgb.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    out = np.zeros((size, size, 3), np.uint8)
    left, top = (size - nw) // 2, (size - nh) // 2
    out[top:top + nh, left:left + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out, (left / size, top / size, (size - nw - left) / size, (size - nh - top) / size)


def decode_detections(raw: np.ndarray, logits: np.ndarray, pad: tuple[float, float, float, float],
                      min_score: float) -> list[Detection]:
    """Boxes and keypoints of the anchors scoring at least `min_score`, in original-image fractions."""
    if raw.shape != (len(ANCHORS), 12) or logits.shape != (len(ANCHORS),):
        raise ValueError(f"unexpected detector outputs {raw.shape}, {logits.shape}")
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = np.flatnonzero(scores >= min_score)
    left, top, right, bottom = pad
    sx, sy = 1.0 - left - right, 1.0 - top - bottom
    dets = []
    for k in keep:
        v = raw[k] / DETECT_SIZE
        ax, ay = ANCHORS[k]
        cx, cy, bw, bh = v[0] + ax, v[1] + ay, v[2], v[3]
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        kps = v[4:12].reshape(4, 2) + (ax, ay)
        box = (box - (left, top, left, top)) / (sx, sy, sx, sy)
        kps = (kps - (left, top)) / (sx, sy)
        dets.append(Detection(box.astype(np.float32), kps.astype(np.float32), float(scores[k])))
    return dets


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a (4,) with boxes b (n, 4)."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(dets: list[Detection], iou: float = NMS_IOU) -> list[Detection]:
    """Best first: each kept detection is the score-weighted mean of the boxes and keypoints overlapping it
    by more than `iou`, with the best one's score."""
    order = sorted(dets, key=lambda d: -d.score)
    out = []
    while order:
        boxes = np.stack([d.box for d in order])
        near = _iou(order[0].box, boxes) > iou
        near[0] = True
        group = [d for d, n in zip(order, near) if n]
        wts = np.array([d.score for d in group])[:, None]
        box = (np.stack([d.box for d in group]) * wts).sum(0) / wts.sum()
        kps = (np.stack([d.keypoints for d in group]) * wts[:, :, None]).sum(0) / wts.sum()
        out.append(Detection(box.astype(np.float32), kps.astype(np.float32), order[0].score))
        order = [d for d, n in zip(order, near) if not n]
    return out


@dataclass(frozen=True)
class Roi:
    cx: float  # centre, pixels
    cy: float
    side: float  # square side, pixels
    angle: float  # radians; a crop point (u, v) maps to c + side * R(angle) (u - 1/2, v - 1/2)


def detection_roi(keypoints: np.ndarray, w: int, h: int) -> Roi:
    x0, y0 = keypoints[0, 0] * w, keypoints[0, 1] * h
    x1, y1 = keypoints[1, 0] * w, keypoints[1, 1] * h
    angle = np.pi / 2 - np.arctan2(-(y1 - y0), x1 - x0)
    angle = (angle + np.pi) % (2 * np.pi) - np.pi
    side = 2.0 * float(np.hypot(x1 - x0, y1 - y0)) * ROI_SCALE
    return Roi(float(x0), float(y0), max(side, 1.0), float(angle))


def _roi_matrix(roi: Roi, size: int) -> np.ndarray:
    """Affine (2, 3) from crop pixels to image pixels."""
    c, s = np.cos(roi.angle), np.sin(roi.angle)
    k = roi.side / size
    rot = np.array([[c, -s], [s, c]]) * k
    return np.hstack([rot, (np.array([roi.cx, roi.cy]) - rot @ np.array([size / 2, size / 2]))[:, None]])


def roi_crop(rgb: np.ndarray, roi: Roi, size: int) -> np.ndarray:
    """The ROI warped to size x size; outside the image the edge pixels repeat (MediaPipe's default there)."""
    import cv2

    m = _roi_matrix(roi, size)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def refine_with_heatmap(xy: np.ndarray, heat: np.ndarray, kernel: int = HEATMAP_KERNEL,
                        min_conf: float = HEATMAP_MIN_CONF) -> np.ndarray:
    """xy (n, 2) in [0, 1] of the crop; heat (hh, hw, n) logits. A point whose window peak reaches `min_conf`
    moves to the confidence-weighted mean of its window (zero border); others stay."""
    hh, hw, n = heat.shape
    out = xy.copy()
    r = (kernel - 1) // 2
    for i in range(n):
        col, row = int(xy[i, 0] * hw), int(xy[i, 1] * hh)
        if not (0 <= col < hw and 0 <= row < hh):
            continue
        r0, r1, c0, c1 = max(0, row - r), min(hh, row + r + 1), max(0, col - r), min(hw, col + r + 1)
        conf = _sigmoid(heat[r0:r1, c0:c1, i].astype(np.float64))
        if conf.max() >= min_conf and conf.sum() > 0:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[i] = ((cols * conf).sum() / conf.sum() / hw, (rows * conf).sum() / conf.sum() / hh)
    return out


def landmarks_from_outputs(raw: np.ndarray, heat: np.ndarray, roi: Roi) -> np.ndarray:
    """(33, 4) landmarks: x, y in image pixels, visibility, presence (probabilities)."""
    lm = raw.reshape(39, 5)
    xy = refine_with_heatmap(lm[:, :2] / LANDMARK_SIZE, heat)[:33]
    pts = _roi_matrix(roi, 1) @ np.vstack([xy.T, np.ones(33)])
    return np.column_stack([pts.T, _sigmoid(lm[:33, 3]), _sigmoid(lm[:33, 4])]).astype(np.float32)


# OpenPose-18 joint <- BlazePose landmark (neck: the midpoint of BlazePose 11 and 12)
OPENPOSE18_FROM_BLAZEPOSE = {
    "nose": 0, "neck": (11, 12), "right_shoulder": 12, "right_elbow": 14, "right_wrist": 16,
    "left_shoulder": 11, "left_elbow": 13, "left_wrist": 15, "right_hip": 24, "right_knee": 26,
    "right_ankle": 28, "left_hip": 23, "left_knee": 25, "left_ankle": 27, "right_eye": 5, "left_eye": 2,
    "right_ear": 8, "left_ear": 7,
}


def to_openpose18(landmarks: np.ndarray) -> np.ndarray:
    """(33, >=3) BlazePose landmarks (x, y, visibility, ...) -> (18, 3) OpenPose joints (x, y, confidence)."""
    out = np.zeros((18, 3), np.float32)
    for j, src in enumerate(OPENPOSE18_FROM_BLAZEPOSE.values()):
        if isinstance(src, tuple):
            a, b = landmarks[src[0]], landmarks[src[1]]
            out[j] = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, min(a[2], b[2]))
        else:
            out[j] = landmarks[src, :3]
    return out
