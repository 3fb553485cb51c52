// A non-Python ExplainServe client: loads proto/explainserve/v1/explainer.proto at run time,
// calls ListModels, GetModel and one Explain, decodes the wire tensors and prints JSON.
//
//   node explain_client.mjs HOST:PORT --image picture.png [--model demo] [--method gradcam]
//        [--target 3] [--layer NAME] [--deadline-ms 60000]
//
// tests/proto/test_node_client.py runs it against a real server and compares with the Python client.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

import { assembleExplanations } from "./wire.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const PROTO_ROOT = join(here, "..", "..", "proto");
// The client service config docs/api.md recommends: round_robin, retries with backoff.
const SERVICE_CONFIG = readFileSync(join(here, "..", "..", "docs", "service_config.json"), "utf8");

function loadService() {
  const definition = protoLoader.loadSync("explainserve/v1/explainer.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto (target_index, byte_offset)
    longs: String, // int64 as decimal strings: no silent precision loss
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).explainserve.v1.ExplainerService;
}

function unary(client, method, request, deadlineMs) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + deadlineMs }, (error, response) =>
      error ? reject(error) : resolve(response));
  });
}

async function collect(stream) {
  const messages = [];
  for await (const message of stream) messages.push(message);
  return messages;
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      image: { type: "string" },
      model: { type: "string", default: "demo" },
      method: { type: "string", default: "gradcam" },
      target: { type: "string" },
      layer: { type: "string", default: "" },
      "deadline-ms": { type: "string", default: "60000" },
    },
  });
  if (positionals.length !== 1 || !values.image) {
    throw new Error("usage: node explain_client.mjs HOST:PORT --image FILE [--model M] [--method M] [--target N]");
  }
  const deadlineMs = Number(values["deadline-ms"]);
  const ExplainerService = loadService();
  const client = new ExplainerService(positionals[0], grpc.credentials.createInsecure(), {
    "grpc.service_config": SERVICE_CONFIG,
  });
  try {
    const listed = await unary(client, "ListModels", {}, deadlineMs);
    const described = await unary(client, "GetModel", { name: values.model }, deadlineMs);
    const request = {
      model: values.model,
      method: values.method,
      input: { encoded_image: readFileSync(values.image) },
      targets: values.target === undefined ? [] : [values.target],
      layer: values.layer,
      outputs: ["OUTPUT_ATTRIBUTION", "OUTPUT_HEATMAP"],
    };
    const stream = client.Explain(request, { deadline: Date.now() + deadlineMs });
    const responses = await collect(stream);
    const info = described.model;
    process.stdout.write(JSON.stringify({
      models: listed.models.map((m) => ({
        name: m.name, arch: m.arch, num_classes: Number(m.num_classes), devices: m.devices,
      })),
      model: {
        name: info.name,
        arch: info.arch,
        num_classes: Number(info.num_classes),
        input_size: [info.input_channels, info.input_height, info.input_width].map(Number),
        labels: info.labels,
        default_layer: info.default_layer,
        methods: info.methods,
        layers: info.layers.map((l) => ({ name: l.name, type: l.type, output_shape: l.output_shape.map(Number) })),
      },
      messages: responses.length,
      explanations: assembleExplanations(responses),
    }) + "\n");
  } finally {
    client.close();
  }
}

main().catch((error) => {
  // A failed call carries its gRPC status: print it so the caller can see what went wrong.
  const status = error.code === undefined ? "" : ` (gRPC status ${grpc.status[error.code]})`;
  process.stderr.write(`explain_client: ${error.message}${status}\n`);
  process.exit(1);
});
