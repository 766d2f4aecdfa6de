// transpose_shared with one line changed: the tile is 32x33. Word (i, j) now sits in bank (33 i + j) % 32
// = (i + j) % 32, so a column of the tile spreads over all 32 banks: no bank conflict.
#define TILE 32

extern "C" __global__ void transpose_padded(const float* __restrict__ x,
                                            float* __restrict__ out,
                                            const int rows,
                                            const int cols) {
    __shared__ float tile[TILE][TILE + 1];                // +1 column of padding
    int c = blockIdx.x * TILE + threadIdx.x;              // column of x
    int r = blockIdx.y * TILE + threadIdx.y;              // row of x
    if (r < rows && c < cols) {
        tile[threadIdx.y][threadIdx.x] = x[r * cols + c]; // coalesced read, a row of the tile
    }
    __syncthreads();                                      // the whole tile is loaded
    c = blockIdx.y * TILE + threadIdx.x;                  // column of out = row of x
    r = blockIdx.x * TILE + threadIdx.y;                  // row of out = column of x
    if (r < cols && c < rows) {
        out[r * rows + c] = tile[threadIdx.x][threadIdx.y]; // coalesced write, conflict-free column read
    }
}
