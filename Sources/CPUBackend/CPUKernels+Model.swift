import Foundation
import Tensor

/// CPU twins of the model kernels: quant.cl, norm.cl, rope.cl, attention.cl, activation.cl.
extension CPUKernels {
    // MARK: quant.cl (quantized sources are raw block bytes; outputs are fp32)

    /// Q8_0 block b (34 bytes: f16 d, i8 qs[32]) -> out[32 b ..< 32 b + 32], for b in `blocks`.
    public static func dequantize_q8_0(_ src: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks { BlockFormat.decodeQ8_0(src + b * 34, out + b * 32) }
    }

    /// Q4_0 block b (18 bytes: f16 d, u8 qs[16]) -> out[32 b ..< 32 b + 32].
    public static func dequantize_q4_0(_ src: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks { BlockFormat.decodeQ4_0(src + b * 18, out + b * 32) }
    }

    /// Q4_1 block b (20 bytes: f16 d, f16 m, u8 qs[16]) -> out[32 b ..< 32 b + 32].
    public static func dequantize_q4_1(_ src: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ blocks: Range<Int>) {
        for b in blocks { BlockFormat.decodeQ4_1(src + b * 20, out + b * 32) }
    }

    /// f16 element i -> out[i].
    public static func dequantize_f16(_ src: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ elements: Range<Int>) {
        BlockFormat.loadHalves(src + 2 * elements.lowerBound, count: elements.count, to: out + elements.lowerBound)
    }

    public static func dequantize_bf16(_ src: UnsafeRawPointer, _ out: UnsafeMutablePointer<Float>, _ elements: Range<Int>) {
        BlockFormat.loadBFloat16s(src + 2 * elements.lowerBound, count: elements.count, to: out + elements.lowerBound)
    }

    /// Blocks `blocks` of a block type expanded straight to 16-bit bits (`out` raw, 2 bytes a weight):
    /// each block decoded to 32 fp32 values on the stack, then rounded to nearest even by `narrow`
    /// (32 values from a pointer into raw bytes).
    static func dequantizeBlocksTo16Bit(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>, blockBytes: Int,
                                        decode: (UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void,
                                        narrow: (UnsafePointer<Float>, UnsafeMutableRawPointer) -> Void) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32) { values in
            for b in blocks {
                decode(src + b * blockBytes, values.baseAddress!)
                narrow(UnsafePointer(values.baseAddress!), out + 2 * b * 32)
            }
        }
    }

    static func dequantizeBlocksToBF16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>, blockBytes: Int,
                                       decode: (UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void) {
        dequantizeBlocksTo16Bit(src, out, blocks, blockBytes: blockBytes, decode: decode) { BlockFormat.storeBFloat16($0, count: 32, to: $1) }
    }

    static func dequantizeBlocksToF16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>, blockBytes: Int,
                                      decode: (UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void) {
        dequantizeBlocksTo16Bit(src, out, blocks, blockBytes: blockBytes, decode: decode) { convert_f32_to_f16($0, $1, 0..<32) }
    }

    public static func dequantize_q8_0_to_bf16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>) {
        dequantizeBlocksToBF16(src, out, blocks, blockBytes: 34, decode: BlockFormat.decodeQ8_0)
    }

    public static func dequantize_q4_0_to_bf16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>) {
        dequantizeBlocksToBF16(src, out, blocks, blockBytes: 18, decode: BlockFormat.decodeQ4_0)
    }

    public static func dequantize_q4_1_to_bf16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>) {
        dequantizeBlocksToBF16(src, out, blocks, blockBytes: 20, decode: BlockFormat.decodeQ4_1)
    }

    public static func dequantize_f16_to_bf16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ elements: Range<Int>) {
        throughFloats(elements) { chunk, floats in
            BlockFormat.loadHalves(src + 2 * chunk.lowerBound, count: chunk.count, to: floats)
            BlockFormat.storeBFloat16(floats, count: chunk.count, to: out + 2 * chunk.lowerBound)
        }
    }

    public static func dequantize_q8_0_to_f16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>) {
        dequantizeBlocksToF16(src, out, blocks, blockBytes: 34, decode: BlockFormat.decodeQ8_0)
    }

    public static func dequantize_q4_0_to_f16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>) {
        dequantizeBlocksToF16(src, out, blocks, blockBytes: 18, decode: BlockFormat.decodeQ4_0)
    }

    public static func dequantize_q4_1_to_f16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ blocks: Range<Int>) {
        dequantizeBlocksToF16(src, out, blocks, blockBytes: 20, decode: BlockFormat.decodeQ4_1)
    }

    /// bf16 element i widened (exact), then rounded to f16 (inf past f16's range).
    public static func dequantize_bf16_to_f16(_ src: UnsafeRawPointer, _ out: UnsafeMutableRawPointer, _ elements: Range<Int>) {
        throughFloats(elements) { chunk, floats in
            for i in chunk { floats[i - chunk.lowerBound] = BlockFormat.bfloat16(src, i) }
            BlockFormat.storeHalves(floats, count: chunk.count, to: out + 2 * chunk.lowerBound)
        }
    }

    /// Calls `body` on consecutive chunks of `elements` with a scratch of fp32 values for the chunk
    /// (one 16-bit format to another through fp32, a chunk at a time in the cache).
    private static func throughFloats(_ elements: Range<Int>, _ body: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
        let chunkSize = 1024
        withUnsafeTemporaryAllocation(of: Float.self, capacity: chunkSize) { scratch in
            for start in stride(from: elements.lowerBound, to: elements.upperBound, by: chunkSize) {
                body(start..<min(start + chunkSize, elements.upperBound), scratch.baseAddress!)
            }
        }
    }

    /// As convert.cl: fp32 narrowed to bf16 bits, round to nearest even, NaN kept quiet.
    public static func convert_f32_to_bf16(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer, _ elements: Range<Int>) {
        BlockFormat.storeBFloat16(x + elements.lowerBound, count: elements.count, to: out + 2 * elements.lowerBound)
    }

    /// As convert.cl: fp32 narrowed to bf16 bits with stochastic rounding, element e's random bits counter_hash(e ^ key).
    public static func convert_f32_to_bf16_stochastic(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer, _ elements: Range<Int>, key: UInt32) {
        BlockFormat.storeBFloat16Stochastic(x + elements.lowerBound, count: elements.count, firstIndex: elements.lowerBound, key: key,
                                            to: out + 2 * elements.lowerBound)
    }

    /// As convert.cl: fp32 narrowed to f16 bits, IEEE round to nearest even.
    public static func convert_f32_to_f16(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer, _ elements: Range<Int>) {
        BlockFormat.storeHalves(x + elements.lowerBound, count: elements.count, to: out + 2 * elements.lowerBound)
    }

    /// out[i, :] = row ids[i] of table [rows, cols] in fp32; an id outside [0, rows) gives zeros.
    public static func get_rows_f32(_ table: UnsafePointer<Float>, rows: Int, _ ids: UnsafePointer<Int32>,
                                    _ out: UnsafeMutablePointer<Float>, cols: Int, _ outputRows: Range<Int>) {
        for i in outputRows {
            let id = Int(ids[i])
            if id < 0 || id >= rows { (out + i * cols).update(repeating: 0, count: cols) }
            else { (out + i * cols).update(from: table + id * cols, count: cols) }
        }
    }

    public static func get_rows_f16(_ table: UnsafeRawPointer, rows: Int, _ ids: UnsafePointer<Int32>,
                                    _ out: UnsafeMutablePointer<Float>, cols: Int, _ outputRows: Range<Int>) {
        for i in outputRows {
            let id = Int(ids[i])
            if id < 0 || id >= rows { (out + i * cols).update(repeating: 0, count: cols) }
            else { BlockFormat.loadHalves(table + 2 * id * cols, count: cols, to: out + i * cols) }
        }
    }

    public static func get_rows_bf16(_ table: UnsafeRawPointer, rows: Int, _ ids: UnsafePointer<Int32>,
                                     _ out: UnsafeMutablePointer<Float>, cols: Int, _ outputRows: Range<Int>) {
        for i in outputRows {
            let id = Int(ids[i])
            for c in 0..<cols { out[i * cols + c] = (id < 0 || id >= rows) ? 0 : BlockFormat.bfloat16(table, id * cols + c) }
        }
    }

    public static func get_rows_q8_0(_ table: UnsafeRawPointer, rows: Int, _ ids: UnsafePointer<Int32>,
                                     _ out: UnsafeMutablePointer<Float>, cols: Int, _ outputRows: Range<Int>) {
        getQuantizedRows(table, rows: rows, ids, out, cols: cols, outputRows, blockBytes: 34, decode: BlockFormat.decodeQ8_0)
    }

    public static func get_rows_q4_0(_ table: UnsafeRawPointer, rows: Int, _ ids: UnsafePointer<Int32>,
                                     _ out: UnsafeMutablePointer<Float>, cols: Int, _ outputRows: Range<Int>) {
        getQuantizedRows(table, rows: rows, ids, out, cols: cols, outputRows, blockBytes: 18, decode: BlockFormat.decodeQ4_0)
    }

    public static func get_rows_q4_1(_ table: UnsafeRawPointer, rows: Int, _ ids: UnsafePointer<Int32>,
                                     _ out: UnsafeMutablePointer<Float>, cols: Int, _ outputRows: Range<Int>) {
        getQuantizedRows(table, rows: rows, ids, out, cols: cols, outputRows, blockBytes: 20, decode: BlockFormat.decodeQ4_1)
    }

    @inline(__always)
    static func getQuantizedRows(_ table: UnsafeRawPointer, rows: Int, _ ids: UnsafePointer<Int32>,
                                 _ out: UnsafeMutablePointer<Float>, cols: Int, _ outputRows: Range<Int>, blockBytes: Int,
                                 decode: (UnsafeRawPointer, UnsafeMutablePointer<Float>) -> Void) {
        let blocksPerRow = cols / 32
        for i in outputRows {
            let id = Int(ids[i])
            guard id >= 0, id < rows else {
                (out + i * cols).update(repeating: 0, count: cols)
                continue
            }
            for b in 0..<blocksPerRow { decode(table + (id * blocksPerRow + b) * blockBytes, out + i * cols + b * 32) }
        }
    }

    // MARK: norm.cl

    /// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * w
    public static func rms_norm(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                cols: Int, eps: Float, _ rows: Range<Int>) {
        for r in rows {
            let xr = x + r * cols, yr = y + r * cols
            let scale = 1 / (rowSumOfSquares(xr, cols) / Float(cols) + eps).squareRoot()
            for c in 0..<cols { yr[c] = xr[c] * scale * w[c] }
        }
    }

    // MARK: rope.cl

    /// Rotates x [tokens, heads, headDim] into y (which may be x) with the (cos, sin) `table`
    /// [tokens, ropeDim / 2, 2]; see rope.cl for the layouts. `pairs` ranges over tokens * heads * headDim / 2.
    public static func rope(_ x: UnsafePointer<Float>, _ table: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                            heads: Int, headDim: Int, ropeDim: Int, halves: Bool, direction: Float, _ pairs: Range<Int>) {
        let pairsPerHead = headDim / 2, rotated = ropeDim / 2
        guard !pairs.isEmpty else { return }
        // Pair g is pair g % pairsPerHead of head row g / pairsPerHead: a head row at a time, so the
        // divisions are per head and the inner loops run over contiguous pairs.
        for headIndex in (pairs.lowerBound / pairsPerHead)...((pairs.upperBound - 1) / pairsPerHead) {
            let first = max(0, pairs.lowerBound - headIndex * pairsPerHead), end = min(pairsPerHead, pairs.upperBound - headIndex * pairsPerHead)
            let token = headIndex / heads
            let xh = x + headIndex * headDim, yh = y + headIndex * headDim, th = table + token * rotated * 2
            for p in first..<max(first, min(end, rotated)) {
                let (i0, i1) = halves ? (p, p + rotated) : (2 * p, 2 * p + 1)
                let c = th[p * 2], s = direction * th[p * 2 + 1]
                let (a, b) = (xh[i0], xh[i1])
                yh[i0] = a * c - b * s
                yh[i1] = a * s + b * c
            }
            for p in max(first, rotated)..<max(end, rotated) {
                let j = ropeDim + 2 * (p - rotated)
                yh[j] = xh[j]
                yh[j + 1] = xh[j + 1]
            }
        }
    }

    // MARK: attention.cl

    /// probs[row, :] = softmax(scale * scores[row, :]) over keys first ... (row % queries) + keyOffset, zero
    /// elsewhere, where first is keyStarts[row / rowsPerStart] (0 without key starts); a row that sees no key is zeros.
    public static func causal_softmax(_ scores: UnsafePointer<Float>, _ probs: UnsafeMutablePointer<Float>, keys: Int,
                                      queries: Int, keyOffset: Int, scale: Float, keyStarts: UnsafePointer<Int32>?, rowsPerStart: Int,
                                      _ rows: Range<Int>) {
        for row in rows {
            let sr = scores + row * keys, pr = probs + row * keys
            let first = keyStarts.map { min(keys, max(0, Int($0[row / rowsPerStart]))) } ?? 0
            let end = max(first, min(keys, row % queries + keyOffset + 1))
            let m = rowMaximum(sr + first, end - first)
            let shift = m == -.infinity ? 0 : m
            // exp in 16 lanes (the loss kernels' polynomial: its arguments are <= 0 here), summed per lane.
            var sums = Float16Lanes(repeating: 0)
            forEachLanes(first..<end) { j, count in
                var e = kdExp((loadLanes(sr + j, count: count) - shift) * scale)
                for k in count..<16 { e[k] = 0 }  // the padding of a short run
                storeLanes(e, pr + j, count: count)
                sums += e
            }
            let sum = sums.sum()
            let inverseSum = m == -.infinity ? 0 : 1 / sum
            for j in first..<end { pr[j] *= inverseSum }
            for j in 0..<first { pr[j] = 0 }
            for j in end..<keys { pr[j] = 0 }
        }
    }

    /// x[row, j] = value for the keys j > (row % queries) + keyOffset that a causal query does not see.
    public static func causal_mask(_ x: UnsafeMutablePointer<Float>, keys: Int, queries: Int, keyOffset: Int, value: Float,
                                   _ rows: Range<Int>) {
        for row in rows {
            let visible = min(keys, row % queries + keyOffset + 1)
            (x + row * keys + visible).update(repeating: value, count: keys - visible)
        }
    }

    /// y [A, C, B, D] = x [A, B, C, D] with axes 1 and 2 swapped; `rows` indexes y's rows of D elements.
    public static func transpose_12(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                    a aSize: Int, b bSize: Int, c cSize: Int, d dSize: Int, _ rows: Range<Int>) {
        // Row r of y [A, C, B, D] is (a * C + c) * B + b: the contiguous D elements of x's row (a, b, c).
        for r in rows {
            let b = r % bSize, rest = r / bSize
            let c = rest % cSize, a = rest / cSize
            (y + r * dSize).update(from: x + ((a * bSize + b) * cSize + c) * dSize, count: dSize)
        }
    }

    // MARK: activation.cl

    /// out = gate / (1 + exp(-gate)) * up, 16 elements at a time (``laneSigmoid``).
    public static func swiglu(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
                              _ range: Range<Int>) {
        forEachLanes(range) { i, count in
            let g = loadLanes(gate + i, count: count)
            storeLanes(g * laneSigmoid(g) * loadLanes(up + i, count: count), out + i, count: count)
        }
    }
}
