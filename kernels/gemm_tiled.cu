// c = a @ b for row-major float32 a (m, k), b (k, n), c (m, n); 16x16 blocks, one thread per element of c.
// Each block walks k in steps of TILE: it stages a 16x16 tile of a and of b in shared memory (each element
// loaded from global memory once per block instead of once per thread), then every thread reads 16 pairs
// from shared memory. Global traffic drops by a factor TILE against the naive one-thread-per-output GEMM.
#define TILE 16

extern "C" __global__ void gemm_tiled(const float* __restrict__ a,
                                      const float* __restrict__ b,
                                      float* __restrict__ c,
                                      const int m,
                                      const int n,
                                      const int k) {
    __shared__ float as[TILE][TILE];                      // as[y][x] = a[row][k0 + x]
    __shared__ float bs[TILE][TILE];                      // bs[y][x] = b[k0 + y][col]
    const int row = blockIdx.y * TILE + threadIdx.y;
    const int col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;                                     // float32 accumulator, in a register
    for (int k0 = 0; k0 < k; k0 += TILE) {
        const int ka = k0 + threadIdx.x;
        const int kb = k0 + threadIdx.y;
        as[threadIdx.y][threadIdx.x] = (row < m && ka < k) ? a[row * k + ka] : 0.0f;  // zero past the edges
        bs[threadIdx.y][threadIdx.x] = (kb < k && col < n) ? b[kb * n + col] : 0.0f;
        __syncthreads();                                  // both tiles loaded
        for (int kk = 0; kk < TILE; ++kk) {
            acc += as[threadIdx.y][kk] * bs[kk][threadIdx.x];  // as: broadcast, bs: a row, conflict-free
        }
        __syncthreads();                                  // done reading before the next tiles overwrite them
    }
    if (row < m && col < n) {
        c[row * n + col] = acc;
    }
}
