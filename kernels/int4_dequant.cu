// INT4 unpack + dequantize: w[r, c] = (q[r, c] - zero[r, g]) * scale[r, g], g = c / group_size.
//
// packed (rows, cols / 2) bytes, helpers.quant.pack_int4's layout: column 2j in the LOW nibble of byte j,
// column 2j + 1 in the HIGH nibble. is_signed: the nibble is a two's-complement code in [-8, 7] (symmetric,
// zero = 0), sign-extended with two shifts; else an unsigned code in [0, 15] with a zero-point (GPTQ/AWQ).
// scales, zeros (rows, ceil(cols / group_size)); group_size even, so a byte's two codes share a group.
// One thread per packed byte: consecutive threads read consecutive bytes and write their two values as one
// 8-byte float2 (or 4-byte __half2) store, so a warp's loads and stores are both fully coalesced.
#include <cuda_fp16.h>

__device__ __forceinline__ void store_pair(float2* p, float a, float b) { *p = make_float2(a, b); }
__device__ __forceinline__ void store_pair(__half2* p, float a, float b) {
    *p = __floats2half2_rn(a, b);                              // each rounded to nearest even
}

template <typename T2>
__device__ void int4_dequant_body(const unsigned char* __restrict__ packed,
                                  const float* __restrict__ scales,
                                  const signed char* __restrict__ zeros,
                                  T2* __restrict__ out,   // (rows, cols / 2) pairs
                                  const int rows, const int cols, const int group_size, const int is_signed) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;      // this thread's byte
    const int bytes_per_row = cols / 2;
    if (i < rows * bytes_per_row) {
        const int row = i / bytes_per_row;
        const int col = 2 * (i - row * bytes_per_row);         // the byte's first (low-nibble) column
        const unsigned int byte = packed[i];
        int lo, hi;
        if (is_signed) {                  // move the nibble's sign bit to bit 31, shift back arithmetically
            lo = (int)(byte << 28) >> 28;
            hi = (int)(byte << 24) >> 28;
        } else {
            lo = byte & 0xF;
            hi = byte >> 4;
        }
        const int groups = (cols + group_size - 1) / group_size;
        const int g = row * groups + col / group_size;         // both columns: group_size is even
        const float s = scales[g];
        const int z = zeros[g];
        store_pair(&out[i], (float)(lo - z) * s, (float)(hi - z) * s);  // columns col, col + 1 = pair i
    }
}

extern "C" __global__ void int4_dequant(const unsigned char* __restrict__ packed, const float* __restrict__ scales,
                                        const signed char* __restrict__ zeros, float2* __restrict__ out,
                                        const int rows, const int cols, const int group_size, const int is_signed) {
    int4_dequant_body<float2>(packed, scales, zeros, out, rows, cols, group_size, is_signed);
}

extern "C" __global__ void int4_dequant_half(const unsigned char* __restrict__ packed, const float* __restrict__ scales,
                                             const signed char* __restrict__ zeros, __half2* __restrict__ out,
                                             const int rows, const int cols, const int group_size,
                                             const int is_signed) {
    int4_dequant_body<__half2>(packed, scales, zeros, out, rows, cols, group_size, is_signed);
}
