// Even and odd threads iterate different affine maps. The two lanes of every pair sit in one warp, so
// every warp takes both paths one after the other, half its lanes masked off each time: 2 * iters steps.
extern "C" __global__ void divergent(const float* __restrict__ x,
                                     float* __restrict__ out,
                                     const int n,
                                     const int iters) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        if (i % 2 == 0) {                                 // lanes of one warp disagree here
            for (int k = 0; k < iters; ++k) v = v * 0.5f + 1.0f;
        } else {
            for (int k = 0; k < iters; ++k) v = v * 0.75f - 0.25f;
        }
        out[i] = v;
    }
}
