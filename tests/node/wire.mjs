// Wire tensors -> plain arrays, for JavaScript clients (the same rules as
// client/explainserve_client/codec.py): little-endian, row-major, contiguous bytes with an
// explicit dtype and shape; a large tensor arrives as chunks that carry its byte_offset and
// total_bytes and are concatenated in the order they were sent.

const ELEMENT = {
  DATA_TYPE_FLOAT32: { size: 4, read: (view, at) => view.getFloat32(at, true) },
  DATA_TYPE_FLOAT16: { size: 2, read: (view, at) => halfToNumber(view.getUint16(at, true)) },
  DATA_TYPE_FLOAT64: { size: 8, read: (view, at) => view.getFloat64(at, true) },
  DATA_TYPE_INT32: { size: 4, read: (view, at) => view.getInt32(at, true) },
  DATA_TYPE_INT64: { size: 8, read: (view, at) => Number(view.getBigInt64(at, true)) },
  DATA_TYPE_UINT8: { size: 1, read: (view, at) => view.getUint8(at) },
};

// IEEE 754 binary16 -> number (DataView has no getFloat16 before Node 24).
function halfToNumber(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

// Joins the chunks of one tensor (in arrival order) and decodes it to {name, dtype, shape, data}.
export function decodeTensor(chunks) {
  const head = chunks[0];
  const label = head.name || "tensor";
  const element = ELEMENT[head.dtype];
  if (element === undefined) {
    throw new Error(`${label} has unsupported dtype ${head.dtype}`);
  }
  let received = 0;
  for (const chunk of chunks) {
    if (Number(chunk.byte_offset) !== received) {
      throw new Error(`chunk of ${label} at byte ${chunk.byte_offset} arrived, expected byte ${received}`);
    }
    received += chunk.data.length;
  }
  const total = Number(head.total_bytes);
  if (total !== 0 && received !== total) {
    throw new Error(`${label} is incomplete: ${received} of ${total} bytes arrived`);
  }
  const bytes = Buffer.concat(chunks.map((chunk) => chunk.data));
  const shape = head.shape.map(Number); // int64 arrives as a string with longs: String
  const count = shape.reduce((product, dim) => product * dim, 1);
  if (bytes.length !== count * element.size) {
    throw new Error(`${label} has ${bytes.length} bytes but shape [${shape}] needs ${count * element.size}`);
  }
  // A DataView reads little-endian whatever the host's byte order and Buffer's alignment.
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const data = Array.from({ length: count }, (_, i) => element.read(view, i * element.size));
  return { name: head.name, dtype: head.dtype, shape, data };
}

// Groups a stream of ExplainResponse messages into one explanation per target_index, with
// each tensor's chunks joined.
export function assembleExplanations(responses) {
  const byIndex = new Map();
  for (const response of responses) {
    let entry = byIndex.get(response.target_index);
    if (entry === undefined) {
      entry = {
        head: response, chunks: { attribution: [], heatmap: [] }, extra: new Map(), complete: false,
      };
      byIndex.set(response.target_index, entry);
    }
    for (const field of ["attribution", "heatmap"]) {
      if (response[field]) entry.chunks[field].push(response[field]);
    }
    for (const tensor of response.tensors ?? []) {
      if (!entry.extra.has(tensor.name)) entry.extra.set(tensor.name, []);
      entry.extra.get(tensor.name).push(tensor);
    }
    entry.complete ||= response.complete;
  }
  return [...byIndex.keys()].sort((a, b) => a - b).map((index) => {
    const { head, chunks, extra, complete } = byIndex.get(index);
    if (!complete) throw new Error(`explanation ${index} ended without its complete message`);
    const decoded = (parts) => (parts.length ? decodeTensor(parts) : null);
    return {
      target_index: index,
      target: Number(head.target),
      label: head.label,
      score: head.score,
      probability: head.probability,
      attribution: decoded(chunks.attribution),
      heatmap: decoded(chunks.heatmap),
      tensors: Object.fromEntries([...extra].map(([name, parts]) => [name, decodeTensor(parts)])),
    };
  });
}
