"""Detections from a JPEG with nothing but onnxruntime, numpy and Pillow (no letterbox, no NMS here).

    python serve.py model.detcal.onnx photo.jpg

The model is patched with `detcal patch --embed-preprocess`: it takes the decoded image, uint8
[H, W, 3], and returns detections in the image's own pixels. One line per detection:
class score x1 y1 x2 y2.
"""
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

model, photo = sys.argv[1], sys.argv[2]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
image = np.asarray(Image.open(photo).convert("RGB"))          # uint8 [H, W, 3]
num, boxes, scores, classes = session.run(["num_dets", "det_boxes", "det_scores", "det_classes"], {"image": image})
for i in range(int(num[0, 0])):
    x1, y1, x2, y2 = boxes[0, i]
    print(f"{classes[0, i]} {scores[0, i]:.5f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f}")
