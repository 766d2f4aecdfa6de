// out[i] = x[i]: consecutive threads touch consecutive floats, so a warp's 32 loads are 128 contiguous bytes
// = 4 sectors of 32 B (coalesced). One thread per element, a 1-D grid of 1-D blocks.
extern "C" __global__ void copy_coalesced(const float* __restrict__ x,
                                          float* __restrict__ out,
                                          const int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;  // this thread's element
    if (i < n) {                                          // the last block may run past the end
        out[i] = x[i];
    }
}
