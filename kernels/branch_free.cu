// The same result as divergent.cu without a data-dependent branch: each lane selects its map's
// coefficients (a select instruction, not a jump) and every lane runs the same loop: iters steps.
extern "C" __global__ void branch_free(const float* __restrict__ x,
                                       float* __restrict__ out,
                                       const int n,
                                       const int iters) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const bool even = (i % 2 == 0);
        const float a = even ? 0.5f : 0.75f;              // selects, not branches
        const float b = even ? 1.0f : -0.25f;
        float v = x[i];
        for (int k = 0; k < iters; ++k) v = v * a + b;    // one path for every lane
        out[i] = v;
    }
}
