// out = x^T for a row-major (rows, cols) float matrix; out is (cols, rows). One thread per element.
// Reads walk along a row of x (coalesced); writes walk down a column of out: 32 lanes, 32 different rows,
// 32 sectors per warp store.
extern "C" __global__ void transpose_naive(const float* __restrict__ x,
                                           float* __restrict__ out,
                                           const int rows,
                                           const int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;  // column of x (fast across the warp)
    const int r = blockIdx.y * blockDim.y + threadIdx.y;  // row of x
    if (r < rows && c < cols) {
        out[c * rows + r] = x[r * cols + c];              // coalesced read, strided write
    }
}
