// out[i] = a[i] + b[i] for i < n: one thread per element, a 1-D grid of 1-D blocks.
extern "C" __global__ void vector_add(const float* __restrict__ a,
                                      const float* __restrict__ b,
                                      float* __restrict__ out,
                                      const int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;  // this thread's global index
    if (i < n) {                                          // the last block may run past the end
        out[i] = a[i] + b[i];
    }
}
