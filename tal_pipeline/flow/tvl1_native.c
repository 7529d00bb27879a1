/* The TV-L1 solver's hot steps, fused: the inner iterations of one warp, the C twin of
 * tvl1_torch's _inner_iterations_inplace + _solve_warp, and the linearisation before them, the
 * twin of _linearise (see tvl1_native.py for how it is built and loaded).
 *
 * Why C: in eager PyTorch every iteration is ~20 passes over (B, ..., H, W) arrays that do not
 * fit in cache; here one pair's arrays (~0.5 MB at 112 x 112) stay in L2 for all its
 * iterations, and one iteration is one sweep over its rows.
 *
 * Arithmetic: the same operations in the same order as the eager code, each rounded to float
 * (built with -ffp-contract=off; fmaf where ATen's CPU kernels fuse a multiply-add:
 * addcmul and add with alpha), so the flow equals eager flow up to float rounding and is
 * the same on every machine, whatever vector width the compiler picks. No threads: the caller
 * runs batches on its own worker threads.
 *
 * Layout, all contiguous float32, pair b at offset b * (planes * H * W):
 *   u (B, 2, H, W) flow, pixels;  p (B, 2, 2, H, W) duals [flow component, direction x|y];
 *   g (B, 2, H, W) gradient of the warped I1;  rho_c, inv_g2 (B, 1, H, W).
 * Invariant (as in eager): the x dual is zero on the last column, the y dual on the last row.
 */
#include <math.h>
#include <stddef.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define TAL_TVL1_ABI 1 /* bumped when the exported signature changes */

int tal_tvl1_abi(void) { return TAL_TVL1_ABI; }

static inline float clampf(float v, float lo, float hi) {
    /* torch.clamp: min(max(v, lo), hi) */
    v = v < lo ? lo : v;
    return v > hi ? hi : v;
}

/* Row y of the primal step: u <- u - g * clamp(rho(u) / |g|^2, -lt, lt) + theta div p, with
 * div p in backward differences (column 0 and row 0 take the dual itself). Reads p rows y and
 * y - 1 (not yet updated this iteration). With change != NULL, writes each pixel's
 * |u_new - u_old|^2 (float, as eager's (u - u_prev).square().sum(1)) there. */
static inline void primal_row(int y, int W, size_t HW, float *restrict u0, float *restrict u1,
                              const float *restrict p, const float *restrict g,
                              const float *restrict rc, const float *restrict ig, float lt,
                              float theta, float *restrict change) {
    const size_t o = (size_t)y * W;
    const float *restrict px0 = p + o, *restrict py0 = p + HW + o;
    const float *restrict px1 = p + 2 * HW + o, *restrict py1 = p + 3 * HW + o;
    const float *restrict g0 = g + o, *restrict g1 = g + HW + o;
    const float *restrict rcy = rc + o, *restrict igy = ig + o;
    /* the y duals of the row above; row 0 subtracts zero (a row of zeros is not at hand, so
     * the row itself stands in, multiplied by 0: exact, p is finite) */
    const float *restrict py0u = y > 0 ? py0 - W : py0, *restrict py1u = y > 0 ? py1 - W : py1;
    const float up = y > 0 ? 1.0f : 0.0f;
    float *restrict a = u0 + o, *restrict b = u1 + o;
#define TAL_PRIMAL_PX(x, dx0, dx1)                                                              \
    do {                                                                                       \
        float rho = fmaf(g0[x], a[x], rcy[x]);                                                 \
        rho = fmaf(g1[x], b[x], rho);                                                          \
        rho = clampf(rho * igy[x], -lt, lt);                                                   \
        float v0 = fmaf(-g0[x], rho, a[x]), v1 = fmaf(-g1[x], rho, b[x]);                      \
        float d0 = (dx0) + py0[x], d1 = (dx1) + py1[x];                                        \
        d0 = d0 - up * py0u[x];                                                                \
        d1 = d1 - up * py1u[x];                                                                \
        v0 = fmaf(d0, theta, v0);                                                              \
        v1 = fmaf(d1, theta, v1);                                                              \
        if (change) {                                                                          \
            float c0 = v0 - a[x], c1 = v1 - b[x];                                              \
            change[x] = c0 * c0 + c1 * c1;                                                     \
        }                                                                                      \
        a[x] = v0;                                                                             \
        b[x] = v1;                                                                             \
    } while (0)
    TAL_PRIMAL_PX(0, px0[0], px1[0]); /* column 0: the dual itself */
    if (change) /* two loops, so that each vectorises */
        for (int x = 1; x < W; x++) TAL_PRIMAL_PX(x, px0[x] - px0[x - 1], px1[x] - px1[x - 1]);
    else
        for (int x = 1; x < W; x++) TAL_PRIMAL_PX(x, px0[x] - px0[x - 1], px1[x] - px1[x - 1]);
#undef TAL_PRIMAL_PX
}

/* One pixel of the dual step: p <- (p + taut grad u) / (1 + taut |grad u|). */
static inline void dual_px(float *restrict px, float *restrict py, float gx, float gy,
                           float taut) {
    float nrm = gx * gx;
    nrm = fmaf(gy, gy, nrm);
    nrm = sqrtf(nrm) * taut + 1.0f;
    *px = fmaf(gx, taut, *px) / nrm;
    *py = fmaf(gy, taut, *py) / nrm;
}

/* Row y of the dual step, per flow component, forward differences (zero on the last column /
 * row). Reads u rows y and y + 1 (already updated). The last column is peeled. */
static inline void dual_row(int y, int H, int W, size_t HW, const float *restrict u,
                            float *restrict p, float taut) {
    const size_t o = (size_t)y * W;
    for (int c = 0; c < 2; c++) {
        const float *uc = u + c * HW + o;
        float *px = p + (2 * c) * HW + o, *py = p + (2 * c + 1) * HW + o;
        if (y < H - 1) {
            const float *dn = uc + W;
            for (int x = 0; x < W - 1; x++)
                dual_px(px + x, py + x, uc[x + 1] - uc[x], dn[x] - uc[x], taut);
            dual_px(px + W - 1, py + W - 1, 0.0f, dn[W - 1] - uc[W - 1], taut);
        } else {
            for (int x = 0; x < W - 1; x++)
                dual_px(px + x, py + x, uc[x + 1] - uc[x], 0.0f, taut);
            dual_px(px + W - 1, py + W - 1, 0.0f, 0.0f, taut);
        }
    }
}

/* One iteration over one pair, rows fused with a lag of one: the primal step of row y, then the
 * dual step of row y - 1 (which needs u of rows y - 1 and y, and whose old p row y's primal
 * step has just read). Returns the mean over pixels of |u_new - u_old|^2 when measuring. */
static double iteration(int H, int W, float *u, float *p, const float *g, const float *rc,
                        const float *ig, float lt, float theta, float taut, float *change) {
    const size_t HW = (size_t)H * W;
    double total = 0.0;
    for (int y = 0; y < H; y++) {
        primal_row(y, W, HW, u, u + HW, p, g, rc, ig, lt, theta, change);
        if (change)
            for (int x = 0; x < W; x++) total += change[x];
        if (y > 0) dual_row(y - 1, H, W, HW, u, p, taut);
    }
    dual_row(H - 1, H, W, HW, u, p, taut);
    return total / (double)HW;
}

/* The inner iterations of one warp for B pairs, each pair on its own (eager's batch semantics:
 * a pair that converges is frozen as it was, whatever its batch mates do):
 *   every check_every iterations (when at least that many are left) the last iteration's
 *   mean |u_new - u_old|^2 is tested against eps2 and a pair under it stops; the remaining
 *   iterations run untested. check_every = 0: exactly `iterations`, no test.
 * change: a work row of W floats. Returns the number of pairs that stopped early. */
int tal_tvl1_solve(int B, int H, int W, float *u, float *p, const float *g, const float *rho_c,
                   const float *inv_g2, float lt, float theta, float taut, int iterations,
                   int check_every, float eps2, float *change) {
    const size_t HW = (size_t)H * W;
    int stopped = 0;
    for (int b = 0; b < B; b++) {
        float *ub = u + 2 * HW * b, *pb = p + 4 * HW * b;
        const float *gb = g + 2 * HW * b, *rb = rho_c + HW * b, *ib = inv_g2 + HW * b;
        int done = 0, k = check_every;
        while (done < iterations) {
            if (k > 0 && done + k < iterations) {
                for (int i = 0; i < k - 1; i++)
                    iteration(H, W, ub, pb, gb, rb, ib, lt, theta, taut, NULL);
                float mean = (float)iteration(H, W, ub, pb, gb, rb, ib, lt, theta, taut, change);
                done += k;
                if (mean < eps2) {
                    stopped++;
                    break;
                }
            } else {
                for (; done < iterations; done++)
                    iteration(H, W, ub, pb, gb, rb, ib, lt, theta, taut, NULL);
            }
        }
    }
    return stopped;
}

/* ------------------------------------------------------------------------------------------
 * The linearisation at each warp (tvl1_torch.tvl1_pairs' warp loop, bicubic, from the warp to
 * inv_g2): I1 and its gradient sampled at x + u, the gain of I1 on the aligned frames, the
 * data term's gradient g, constant rho_c and 1 / |g|^2. */

/* Keys' cubic convolution weights (A = -0.75, torch's bicubic grid_sample) at offset t. */
static inline void cubic_weights(float t, float w[4]) {
    const float A = -0.75f;
    float x0 = t + 1.0f, x2 = 1.0f - t, x3 = 2.0f - t;
    w[0] = ((A * x0 - 5.0f * A) * x0 + 8.0f * A) * x0 - 4.0f * A;
    w[1] = ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f;
    w[2] = ((A + 2.0f) * x2 - (A + 3.0f)) * x2 * x2 + 1.0f;
    w[3] = ((A * x3 - 5.0f * A) * x3 + 8.0f * A) * x3 - 4.0f * A;
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* The k-th smallest of v[0..n) (v reordered): Wirth's selection, O(n) on average; the same
 * value as any selection (NumPy's partition in the torch path). */
static float select_kth(float *v, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const float pivot = v[k];
        int i = lo, j = hi;
        do {
            while (v[i] < pivot) i++;
            while (pivot < v[j]) j--;
            if (i <= j) {
                float t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                j--;
            }
        } while (i <= j);
        if (j < k) lo = i;
        if (k < i) hi = j;
    }
    return v[k];
}

/* max(v, 1): the grey level whose log tvl1_blocks.log_intensity takes */
static inline float at_least_1(float v) { return v < 1.0f ? 1.0f : v; }

/* Pixel o = (x, y): I1, I1x, I1y (s: 3 planes) at (x, y) + u by bicubic interpolation, the
 * border replicated (torch's grid_sample, bicubic, padding "border", align_corners). */
static inline void sample_px(const float *restrict s, int W, int H, size_t HW, size_t o, int x,
                             int y, const float *restrict ub, float *restrict i1w,
                             float *restrict gb) {
    float sx = (float)x + ub[o], sy = (float)y + ub[HW + o];
    /* far outside, every tap is the border pixel: bound the coordinate so that floor stays
     * an int (NaN too) */
    float bx = sx > W + 1.0f ? W + 1.0f : sx, by = sy > H + 1.0f ? H + 1.0f : sy;
    bx = bx >= -2.0f ? bx : -2.0f; /* NaN: -2 */
    by = by >= -2.0f ? by : -2.0f;
    float fx = floorf(bx), fy = floorf(by);
    float wx[4], wy[4];
    cubic_weights(bx - fx, wx);
    cubic_weights(by - fy, wy);
    int xs[4], ys[4];
#pragma GCC unroll 4 /* straight-line code, so that the loop over pixels vectorises */
    for (int k = 0; k < 4; k++) {
        xs[k] = clampi((int)fx - 1 + k, 0, W - 1); /* border: replicate */
        ys[k] = clampi((int)fy - 1 + k, 0, H - 1) * W;
    }
    float val[3];
#pragma GCC unroll 3
    for (int c = 0; c < 3; c++) {
        const int plane = c * (int)HW;
        float acc = 0.0f;
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const int row = plane + ys[r];
            float v = s[row + xs[0]] * wx[0];
            v = v + s[row + xs[1]] * wx[1];
            v = v + s[row + xs[2]] * wx[2];
            v = v + s[row + xs[3]] * wx[3];
            acc = r == 0 ? v * wy[0] : acc + v * wy[r];
        }
        val[c] = acc;
    }
    i1w[o] = val[0];
    gb[o] = val[1];
    gb[HW + o] = val[2];
}

/* Row y of sample_px; branch-free, so that the loop over x may vectorise (gathers). */
#ifdef __AVX512F__
/* cubic_weights for 16 offsets: the same operations in the same order (bitwise the same) */
static inline void cubic_weights16(__m512 t, __m512 w[4]) {
    const __m512 A = _mm512_set1_ps(-0.75f), A5 = _mm512_set1_ps(5.0f * -0.75f);
    const __m512 A8 = _mm512_set1_ps(8.0f * -0.75f), A4 = _mm512_set1_ps(4.0f * -0.75f);
    const __m512 A2 = _mm512_set1_ps(-0.75f + 2.0f), A3 = _mm512_set1_ps(-0.75f + 3.0f);
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    __m512 x0 = _mm512_add_ps(t, one), x2 = _mm512_sub_ps(one, t), x3 = _mm512_sub_ps(two, t);
#define TAL_FAR(x) _mm512_sub_ps(_mm512_mul_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps( \
    _mm512_mul_ps(A, x), A5), x), A8), x), A4)
#define TAL_NEAR(x) _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps( \
    _mm512_mul_ps(A2, x), A3), x), x), one)
    w[0] = TAL_FAR(x0);
    w[1] = TAL_NEAR(t);
    w[2] = TAL_NEAR(x2);
    w[3] = TAL_FAR(x3);
#undef TAL_FAR
#undef TAL_NEAR
}

/* sample_px for pixels x0 .. x0 + 15 of row y, with gathers; bitwise the same results */
static inline void sample_16(const float *restrict s, int W, int H, size_t HW, size_t o, int x0,
                             int y, const float *restrict ub, float *restrict i1w,
                             float *restrict gb) {
    const __m512 lane = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 sx = _mm512_add_ps(_mm512_add_ps(_mm512_set1_ps((float)x0), lane),
                              _mm512_loadu_ps(ub + o));
    __m512 sy = _mm512_add_ps(_mm512_set1_ps((float)y), _mm512_loadu_ps(ub + HW + o));
    const __m512 hx = _mm512_set1_ps(W + 1.0f), hy = _mm512_set1_ps(H + 1.0f);
    const __m512 lo = _mm512_set1_ps(-2.0f);
    /* as the scalar selects: above the bound -> bound; then not >= -2 (NaN too) -> -2 */
    __m512 bx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(sx, hx, _CMP_GT_OQ), sx, hx);
    __m512 by = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(sy, hy, _CMP_GT_OQ), sy, hy);
    bx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(bx, lo, _CMP_GE_OQ), lo, bx);
    by = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(by, lo, _CMP_GE_OQ), lo, by);
    __m512 fx = _mm512_roundscale_ps(bx, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 fy = _mm512_roundscale_ps(by, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 wx[4], wy[4];
    cubic_weights16(_mm512_sub_ps(bx, fx), wx);
    cubic_weights16(_mm512_sub_ps(by, fy), wy);
    const __m512i ix = _mm512_cvttps_epi32(fx), iy = _mm512_cvttps_epi32(fy);
    const __m512i zero = _mm512_setzero_si512(), wmax = _mm512_set1_epi32(W - 1);
    const __m512i hmax = _mm512_set1_epi32(H - 1), wv = _mm512_set1_epi32(W);
    __m512i xs[4], ys[4];
    for (int k = 0; k < 4; k++) {
        const __m512i d = _mm512_set1_epi32(k - 1);
        xs[k] = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(ix, d), zero), wmax);
        ys[k] = _mm512_mullo_epi32(
            _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(iy, d), zero), hmax), wv);
    }
    float *outs[3] = {i1w + o, gb + o, gb + HW + o};
    for (int c = 0; c < 3; c++) {
        const __m512i plane = _mm512_set1_epi32(c * (int)HW);
        __m512 acc = _mm512_setzero_ps();
        for (int r = 0; r < 4; r++) {
            const __m512i row = _mm512_add_epi32(plane, ys[r]);
            __m512 v = _mm512_mul_ps(_mm512_i32gather_ps(_mm512_add_epi32(row, xs[0]), s, 4), wx[0]);
            for (int k = 1; k < 4; k++)
                v = _mm512_add_ps(v, _mm512_mul_ps(
                    _mm512_i32gather_ps(_mm512_add_epi32(row, xs[k]), s, 4), wx[k]));
            acc = r == 0 ? _mm512_mul_ps(v, wy[0]) : _mm512_add_ps(acc, _mm512_mul_ps(v, wy[r]));
        }
        _mm512_storeu_ps(outs[c], acc);
    }
}
#endif

static void sample_row(const float *restrict s, int W, int H, size_t HW, int y,
                       const float *restrict ub, float *restrict i1w, float *restrict gb) {
    const size_t o = (size_t)y * W;
    int x = 0;
#ifdef __AVX512F__ /* 16 pixels at a time (the compiler does not vectorise the gathers) */
    for (; x + 16 <= W; x += 16) sample_16(s, W, H, HW, o + x, x, y, ub, i1w, gb);
#endif
    for (; x < W; x++) sample_px(s, W, H, HW, o + x, x, y, ub, i1w, gb);
}

/* I1 and its gradient scaled by the gain (exact when it is 1), then the data term's
 * constant rho_c = I1w - g.u - I0 and 1 / (|g|^2 + tiny), over one pair's HW pixels. */
static void data_term(size_t HW, float gain, float tiny, const float *restrict ub,
                      const float *restrict ib, const float *restrict i1w, float *restrict gb,
                      float *restrict rb, float *restrict qb) {
    for (size_t o = 0; o < HW; o++) {
        float g0 = gb[o] * gain, g1 = gb[HW + o] * gain, iw = i1w[o] * gain;
        gb[o] = g0;
        gb[HW + o] = g1;
        float gu = g0 * ub[o];
        gu = gu + g1 * ub[HW + o];
        rb[o] = (iw - gu) - ib[o];
        float g2 = g0 * g0;
        g2 = g2 + g1 * g1;
        qb[o] = 1.0f / (g2 + tiny);
    }
}

/* For B pairs: stack (B, 3, H, W) = I1, I1x, I1y; u (B, 2, H, W); i0 (B, 1, H, W) frame 0;
 * with_gain: scale I1w and its gradient by I1's gain on the aligned frames
 * (tvl1_blocks.aligned_gain: the lower median, over the pixels whose sample lies inside, of
 * ln max(I0, 1) - ln max(I1w, 1), exponentiated, clamped to [gain_lo, gain_hi], 1 with no pixel
 * inside; taken here as the lower median of max(I0, 1) / max(I1w, 1), the same order statistic
 * since ln is increasing, without a logarithm per pixel: the same gain but for rounding). Writes g (B, 2, H, W), rho_c, inv_g2
 * (B, 1, H, W). work: 2 * H * W floats. */
void tal_tvl1_linearise(int B, int H, int W, const float *stack, const float *u, const float *i0,
                        int with_gain, float gain_lo, float gain_hi, float tiny, float *g,
                        float *rho_c, float *inv_g2, float *work) {
    const size_t HW = (size_t)H * W;
    float *i1w = work, *ratios = work + HW;
    for (int b = 0; b < B; b++) {
        const float *s = stack + 3 * HW * b, *ub = u + 2 * HW * b, *ib = i0 + HW * b;
        float *gb = g + 2 * HW * b, *rb = rho_c + HW * b, *qb = inv_g2 + HW * b;
        for (int y = 0; y < H; y++) sample_row(s, W, H, HW, y, ub, i1w, gb);
        int n_inside = 0;
        if (with_gain) /* the gain's samples: pixels whose sample lies inside */
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    const size_t o = (size_t)y * W + x;
                    float sx = (float)x + ub[o], sy = (float)y + ub[HW + o];
                    if (sx >= 1.0f && sx <= W - 2.0f && sy >= 1.0f && sy <= H - 2.0f)
                        ratios[n_inside++] = at_least_1(ib[o]) / at_least_1(i1w[o]);
                }
        float gain = 1.0f;
        if (with_gain && n_inside > 0) {
            gain = select_kth(ratios, n_inside, (n_inside - 1) / 2);
            gain = gain < gain_lo ? gain_lo : (gain > gain_hi ? gain_hi : gain);
        }
        data_term(HW, gain, tiny, ub, ib, i1w, gb, rb, qb);
    }
}
