// Detections from a JPEG with nothing but onnxruntime-node and sharp (no letterbox, no NMS here).
//
//     node serve.mjs model.detcal.onnx photo.jpg
//
// The model is patched with `detcal patch --embed-preprocess`: it takes the decoded image,
// uint8 [H, W, 3], and returns detections in the image's own pixels. One line per detection:
// class score x1 y1 x2 y2 (the same as serve.py).
import ort from "onnxruntime-node";
import sharp from "sharp";

const [model, photo] = process.argv.slice(2);
const session = await ort.InferenceSession.create(model, { executionProviders: ["cpu"] });
const { data, info } = await sharp(photo).removeAlpha().toColourspace("srgb").raw()
  .toBuffer({ resolveWithObject: true });                     // RGB, uint8 [H, W, 3]
const image = new ort.Tensor("uint8", new Uint8Array(data), [info.height, info.width, 3]);
const out = await session.run({ image });
const [boxes, scores, classes] = [out.det_boxes.data, out.det_scores.data, out.det_classes.data];
for (let i = 0; i < Number(out.num_dets.data[0]); i++) {
  const box = Array.from(boxes.slice(4 * i, 4 * i + 4), (v) => v.toFixed(2));
  console.log(`${classes[i]} ${scores[i].toFixed(5)} ${box.join(" ")}`);
}
