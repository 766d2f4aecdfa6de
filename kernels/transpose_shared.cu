// out = x^T through a 32x32 tile in shared memory, launched with 32x32 blocks: both the global read and
// the global write are coalesced. But the tile is read by column: the 32 lanes of a warp read words
// tile[0..31][y], 32 floats apart, all in bank y -> a 32-way bank conflict. transpose_padded fixes it.
#define TILE 32

extern "C" __global__ void transpose_shared(const float* __restrict__ x,
                                            float* __restrict__ out,
                                            const int rows,
                                            const int cols) {
    __shared__ float tile[TILE][TILE];
    int c = blockIdx.x * TILE + threadIdx.x;              // column of x
    int r = blockIdx.y * TILE + threadIdx.y;              // row of x
    if (r < rows && c < cols) {
        tile[threadIdx.y][threadIdx.x] = x[r * cols + c]; // coalesced read, a row of the tile
    }
    __syncthreads();                                      // the whole tile is loaded
    c = blockIdx.y * TILE + threadIdx.x;                  // column of out = row of x
    r = blockIdx.x * TILE + threadIdx.y;                  // row of out = column of x
    if (r < cols && c < rows) {
        out[r * rows + c] = tile[threadIdx.x][threadIdx.y]; // coalesced write, a column of the tile
    }
}
