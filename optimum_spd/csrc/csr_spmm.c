/* Sparse (CSR) weight times dense activations, for batch-1 CPU inference of pruned linears.
 *
 *     out[t, i] = scale[i] * sum_k values[k] * x[t, col[k]] + bias[i]      for the non-zeros k of row i
 *
 * x: (tokens, in_features) and out: (tokens, rows), both row-major fp32, as torch holds them. The kernel copies x
 * transposed and zero-padded into the scratch `xt` (in_features, tokens_padded), tokens_padded a multiple of 16,
 * so each non-zero weight multiplies one contiguous run of 16 tokens: one 512-bit vector, or two 256-bit ones.
 * Column indices are uint16 (in_features <= 65535) and row pointers int32: at 90% sparsity the index and value
 * streams are most of what is read, so small types matter. Values are fp32 (exact) or int8 with one fp32 scale
 * per output row (symmetric per-row quantisation; `scale` is NULL for fp32).
 *
 * Rows go in groups of 16 (the unit split across OpenMP threads): a group's results are gathered in a small tile
 * and written to `out` as contiguous runs of 16 floats. Writing each row's tokens straight to out[t, i] would
 * touch one cache line per token per row, with a stride (rows * 4 bytes) that is a multiple of 4 KiB for BERT's
 * shapes: every such line lands in the same cache set, and that cost 2-3x the whole product when measured.
 */
#include <stdint.h>

#define LANES 16 /* tokens per vector */
#define GROUP 16 /* output rows per tile */
#define BLOCK 4  /* vectors of tokens per pass over a row's non-zeros */

/* 16 floats as one value: GCC/Clang vector extensions compile it to one zmm (AVX-512), two ymm (AVX2) or four
 * xmm registers, so the code stays portable. aligned(4): loads and stores may be unaligned. */
typedef float vec16 __attribute__((vector_size(LANES * sizeof(float)), aligned(4)));

#define X_AT(k, t0) (*(const vec16 *)(xt + (int64_t)col[k] * tokens_padded + (t0)))
#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* x (tokens, in_features) -> xt (in_features, tokens_padded), zero-padded, in 16 x 16 tiles (both sides stay in
 * a few cache lines per tile). */
static void transpose_into(const float *x, float *xt, int64_t tokens, int64_t in_features, int64_t tokens_padded,
                           int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t j0 = 0; j0 < in_features; j0 += LANES) {
        for (int64_t t0 = 0; t0 < tokens_padded; t0 += LANES) {
            for (int64_t j = j0; j < MIN(j0 + LANES, in_features); ++j) {
                float *row = xt + j * tokens_padded;
                for (int64_t t = t0; t < t0 + LANES; ++t) row[t] = t < tokens ? x[t * in_features + j] : 0.0f;
            }
        }
    }
}

/* A function per value type (float, int8_t): C has no templates. Two inner loops with compile-time widths (so
 * the accumulators stay in registers): BLOCK vectors of tokens with one accumulator each, or one vector with
 * consecutive non-zeros spread over BLOCK accumulators, so no FMA waits on the previous one's latency. */
#define DEFINE_SPMM(NAME, VALUE_T)                                                                          \
    static inline void NAME##_block(const int32_t begin, const int32_t end, const uint16_t *col,            \
                                    const VALUE_T *values, const float *xt, int64_t tokens_padded,          \
                                    int64_t t0, float s, float b, float *tile_row) {                        \
        vec16 acc[BLOCK] = {{0}};                                                                           \
        for (int32_t k = begin; k < end; ++k) {                                                             \
            const float w = (float)values[k];                                                               \
            for (int v = 0; v < BLOCK; ++v) acc[v] += w * X_AT(k, t0 + v * LANES);                         \
        }                                                                                                   \
        for (int v = 0; v < BLOCK; ++v) *(vec16 *)(tile_row + v * LANES) = acc[v] * s + b;                  \
    }                                                                                                       \
    static inline void NAME##_vector(const int32_t begin, const int32_t end, const uint16_t *col,           \
                                     const VALUE_T *values, const float *xt, int64_t tokens_padded,         \
                                     int64_t t0, float s, float b, float *tile_row) {                       \
        vec16 acc[BLOCK] = {{0}};                                                                           \
        int32_t k = begin;                                                                                  \
        for (; k + BLOCK <= end; k += BLOCK)                                                                \
            for (int u = 0; u < BLOCK; ++u) acc[u] += (float)values[k + u] * X_AT(k + u, t0);               \
        for (; k < end; ++k) acc[0] += (float)values[k] * X_AT(k, t0);                                      \
        *(vec16 *)tile_row = (acc[0] + acc[1] + acc[2] + acc[3]) * s + b;                                   \
    }                                                                                                       \
    void NAME(int64_t rows, int64_t tokens, int64_t in_features, const int32_t *row_ptr, const uint16_t *col, \
              const VALUE_T *values, const float *scale, const float *x, const float *bias, float *out,       \
              float *xt, int threads) {                                                                     \
        const int64_t tokens_padded = (tokens + LANES - 1) / LANES * LANES;                                 \
        transpose_into(x, xt, tokens, in_features, tokens_padded, threads);                                 \
        _Pragma("omp parallel for num_threads(threads) schedule(static)")                                   \
        for (int64_t i0 = 0; i0 < rows; i0 += GROUP) {                                                      \
            const int64_t group = MIN(GROUP, rows - i0);                                                    \
            float tile[GROUP][BLOCK * LANES];                                                               \
            for (int64_t t0 = 0; t0 < tokens_padded;) {                                                     \
                const int wide = tokens_padded - t0 >= BLOCK * LANES;                                       \
                for (int64_t r = 0; r < group; ++r) {                                                       \
                    const int64_t i = i0 + r;                                                               \
                    const float s = scale ? scale[i] : 1.0f, b = bias ? bias[i] : 0.0f;                     \
                    (wide ? NAME##_block : NAME##_vector)(row_ptr[i], row_ptr[i + 1], col, values, xt,      \
                                                          tokens_padded, t0, s, b, tile[r]);                \
                }                                                                                           \
                const int64_t width = wide ? BLOCK * LANES : LANES;                                         \
                for (int64_t t = t0; t < MIN(t0 + width, tokens); ++t)                                      \
                    for (int64_t r = 0; r < group; ++r) out[t * rows + i0 + r] = tile[r][t - t0];           \
                t0 += width;                                                                                \
            }                                                                                               \
        }                                                                                                   \
    }

DEFINE_SPMM(spd_spmm_f32, float)
DEFINE_SPMM(spd_spmm_i8, int8_t)

int spd_spmm_lanes(void) { return LANES; }
