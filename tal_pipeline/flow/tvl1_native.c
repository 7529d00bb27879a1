/* The TV-L1 inner iterations of one warp, fused: the C twin of tvl1_torch's
 * _inner_iterations_inplace + _solve_warp (see tvl1_native.py for how it is built and loaded).
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
