// W4A16 GEMV: y = W x, W (rows, cols) in 4-bit codes + per-group scales/zero-points, x float16, y float32.
//
// The matrix-vector product of LLM decoding at batch 1: every weight is read once and used once, so the
// kernel is bound by memory bandwidth and 4-bit weights move 4x fewer bytes than float16 ones.
// One warp per output row. Lane l reads 32-bit words l, l + 32, l + 64, ... of its row (a warp reads 128
// consecutive bytes per step: coalesced), each word holding 8 codes in helpers.quant.pack_int4's layout
// (code j of the word in bits 4j .. 4j+3), and the 8 matching halves of x in one 16-byte load. Partial sums
// are float32; the warp adds its 32 partial sums with a shuffle tree (5 steps, no shared memory).
// Needs cols % 8 == 0 and group_size % 8 == 0 (a word's codes share a group), x 16-byte aligned,
// blockDim.x a multiple of 32.
#include <cuda_fp16.h>

#define WARP 32

extern "C" __global__ void w4a16_gemv(const unsigned int* __restrict__ packed,  // (rows, cols / 8) words
                                      const float* __restrict__ scales,         // (rows, groups)
                                      const signed char* __restrict__ zeros,    // (rows, groups)
                                      const __half* __restrict__ x,             // (cols,)
                                      float* __restrict__ y,                    // (rows,)
                                      const int rows, const int cols, const int group_size, const int is_signed) {
    const int lane = threadIdx.x % WARP;
    const int row = blockIdx.x * (blockDim.x / WARP) + threadIdx.x / WARP;  // this warp's row
    const int words = cols / 8;
    const int groups = (cols + group_size - 1) / group_size;
    float acc = 0.0f;
    if (row < rows) {                     // no early return: every lane must reach the shuffles below
        for (int w = lane; w < words; w += WARP) {
            const unsigned int word = packed[row * words + w];
            const float4 x8 = reinterpret_cast<const float4*>(x)[w];       // x[8w .. 8w+7], one 16-byte load
            const __half2* xh = reinterpret_cast<const __half2*>(&x8);
            const int g = row * groups + (8 * w) / group_size;
            const float s = scales[g];
            const int z = zeros[g];
            float part = 0.0f;
            for (int j = 0; j < 8; j += 2) {
                const float2 xf = __half22float2(xh[j / 2]);                // x[8w + j], x[8w + j + 1]
                const int q0 = is_signed ? (int)(word << (28 - 4 * j)) >> 28 : (word >> (4 * j)) & 0xF;
                const int q1 = is_signed ? (int)(word << (24 - 4 * j)) >> 28 : (word >> (4 * j + 4)) & 0xF;
                part += (float)(q0 - z) * xf.x;
                part += (float)(q1 - z) * xf.y;
            }
            acc += s * part;              // the group's scale once per 8 products
        }
    }
    for (int offset = WARP / 2; offset > 0; offset /= 2) {                 // 16, 8, 4, 2, 1
        acc += __shfl_down_sync(0xffffffffu, acc, offset);                  // lane l adds lane l + offset's sum
    }
    if (row < rows && lane == 0) {
        y[row] = acc;                     // lane 0 holds the sum of all 32 lanes
    }
}
