// Capstone: c = a + b on INT8 codes, each vector with its own scale and zero-point (per tensor):
//
//     c_q[i] = clamp(rint((s_a (a_q[i] - z_a) + s_b (b_q[i] - z_b)) * (1 / s_c)) + z_c, -128, 127)
//
// the CPU reference quantize(dequantize(a) + dequantize(b)) of helpers.quant, bit for bit. Every float
// operation is one IEEE float32 operation rounded to nearest even, in the reference's order:
// __fmul_rn / __fadd_rn are never contracted into an FMA (which rounds a*b+c once, the reference twice),
// rintf rounds halves to even like torch.round / numpy.rint, and 1 / s_c is computed on the host in float32
// (as QParams.quantize does), so no device division is involved. a_q - z_a is exact in int32.
extern "C" __global__ void quantized_vector_add_kernel(const signed char* __restrict__ a,
                                                       const signed char* __restrict__ b,
                                                       signed char* __restrict__ out,
                                                       const int n,
                                                       const float scale_a, const int zero_a,
                                                       const float scale_b, const int zero_b,
                                                       const float inv_scale_out, const int zero_out) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const int qa = a[i] - zero_a;                              // int32 intermediates: exact
        const int qb = b[i] - zero_b;
        const float sum = __fadd_rn(__fmul_rn((float)qa, scale_a),   // dequantize a and b, add: three roundings
                                    __fmul_rn((float)qb, scale_b));
        float q = rintf(__fmul_rn(sum, inv_scale_out)) + (float)zero_out;  // requantize: round half to even
        q = fminf(fmaxf(q, -128.0f), 127.0f);                      // saturate to int8
        out[i] = (signed char)q;
    }
}
