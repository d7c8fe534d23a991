/*
 * tinyqml_rt: int8 kernels, bit-exact with TFLite Micro's reference int8 kernels.
 * See tinyqml_rt.h. Integer overflow that TFLite leaves to two's-complement wrapping is written with
 * explicit unsigned arithmetic here, so the code is free of undefined behaviour (UBSan-clean).
 */
/* the int8 dot products are written for the auto-vectorizer; ask gcc for it at -O2 too */
#if defined(__GNUC__) && !defined(__clang__) && !defined(TQ_NO_VECTORIZE)
#pragma GCC optimize("O3")
#endif

#include "tinyqml_rt.h"

#include <string.h>

#define TQ_INT32_MAX ((int32_t)0x7fffffff)
#define TQ_INT32_MIN ((int32_t)(-TQ_INT32_MAX - 1))

#if defined(__GNUC__) || defined(__clang__)
#define TQ_RESTRICT __restrict__
#else
#define TQ_RESTRICT restrict
#endif

static inline int32_t wadd(int32_t a, int32_t b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
static inline int32_t wsub(int32_t a, int32_t b) { return (int32_t)((uint32_t)a - (uint32_t)b); }
static inline int32_t wshl(int32_t a, int s) { return (int32_t)((uint32_t)a << s); }
static inline int32_t clamp32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

static inline int32_t srdhm(int32_t a, int32_t b)
{
    int64_t ab, nudge;
    if (a == TQ_INT32_MIN && b == TQ_INT32_MIN) {
        return TQ_INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static inline int32_t rdbpot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t mbqm(int32_t x, int32_t multiplier, int shift)
{
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    return rdbpot(srdhm(wshl(x, left), multiplier), right);
}

int32_t tq_srdhm(int32_t a, int32_t b) { return srdhm(a, b); }
int32_t tq_rdbpot(int32_t x, int exponent) { return rdbpot(x, exponent); }
int32_t tq_mbqm(int32_t x, int32_t multiplier, int shift) { return mbqm(x, multiplier, shift); }

static inline int8_t requant(int32_t acc, int32_t m, int32_t s, int32_t off, int32_t lo, int32_t hi)
{
    return (int8_t)clamp32(mbqm(acc, m, s) + off, lo, hi);
}

/*
 * Fast MultiplyByQuantizedMultiplier: one 64-bit multiply, one add, one shift. Identical to mbqm for
 * every int32 x when the right shift is at most 31, the left shift at most 31, and the multiplier is
 * not INT32_MIN (rq.slow is set otherwise and callers use mbqm). Proof sketch, with ab = (x << left) * m:
 *  - SaturatingRoundingDoublingHighMul is (ab + nudge) / 2^31 truncated; for ab >= 0 that is
 *    floor((ab + 2^30) / 2^31), and for ab < 0, trunc((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31)
 *    too, so srdhm = floor(B / 2^31) with B = ab + 2^30 (no saturation: only MIN * MIN saturates);
 *  - RoundingDivideByPOT(v, e) for e >= 1 is floor((v + 2^(e-1) - [v < 0]) / 2^e) (round half away
 *    from zero), and v < 0 exactly when B < 0;
 *  - floor((floor(B / 2^31) + c) / 2^e) = floor((B + c 2^31) / 2^(31+e)) for an integer c.
 * So mbqm = (B + (2^(e-1) << 31) - [B < 0 and e > 0] 2^31) >> (31 + e), computed in int64 without
 * overflow (|ab| < 2^62, the added terms below 2^62). The result of an arithmetic right shift of a
 * negative int64 is implementation-defined in C99; gcc and every target we build for shift arithmetically.
 */
typedef struct {
    int64_t rnd;    /* 2^30 + (2^(e-1) << 31) */
    int64_t neg;    /* 2^31 when e > 0 */
    int32_t m, s;
    int lsh, tsh;
    int slow;
} rq_t;

static inline rq_t rq_make(int32_t m, int32_t s)
{
    rq_t r;
    int right = s > 0 ? 0 : -s;
    r.m = m;
    r.s = s;
    r.lsh = s > 0 ? s : 0;
    r.slow = right > 31 || r.lsh > 31 || m == TQ_INT32_MIN;
    if (r.slow) {
        right = 0;
        r.lsh = 0;
    }
    r.tsh = 31 + right;
    r.rnd = ((int64_t)1 << 30) + ((((int64_t)1 << right) >> 1) << 31);
    r.neg = right > 0 ? ((int64_t)1 << 31) : 0;
    return r;
}

static inline int32_t rq_fast(const rq_t *r, int32_t x)
{
    const int64_t b = (int64_t)wshl(x, r->lsh) * r->m;
    return (int32_t)((b + r->rnd - (((b + ((int64_t)1 << 30)) >> 63) & r->neg)) >> r->tsh);
}

static inline int32_t rq_mbqm(const rq_t *r, int32_t x)
{
    return r->slow ? mbqm(x, r->m, r->s) : rq_fast(r, x);
}

static inline int8_t rq_out(const rq_t *r, int32_t acc, int32_t off, int32_t lo, int32_t hi)
{
    return (int8_t)clamp32(rq_mbqm(r, acc) + off, lo, hi);
}

/* ---------------------------------------------------------------- CONV_2D */

/* int8 dot products: int16 products (|a * b| <= 2^14, or <= 255 * 128 with an offset), int32 sums */
static int32_t dot_s8_offset(const int8_t *TQ_RESTRICT a, const int8_t *TQ_RESTRICT b, int32_t n, int32_t off)
{
    int32_t s = 0, i;
    for (i = 0; i < n; ++i) {
        s += (int16_t)(a[i] + off) * (int16_t)b[i];
    }
    return s;
}

/* s[j] += sum a[i] * bj[i]: one shared vector against four (the shared one loaded once) */
static inline void dot4(const int8_t *TQ_RESTRICT a, const int8_t *TQ_RESTRICT b0, const int8_t *TQ_RESTRICT b1,
                        const int8_t *TQ_RESTRICT b2, const int8_t *TQ_RESTRICT b3, int32_t n, int32_t *TQ_RESTRICT s)
{
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, i;
    for (i = 0; i < n; ++i) {
        const int16_t av = a[i];
        s0 += av * (int16_t)b0[i];
        s1 += av * (int16_t)b1[i];
        s2 += av * (int16_t)b2[i];
        s3 += av * (int16_t)b3[i];
    }
    s[0] += s0;
    s[1] += s1;
    s[2] += s2;
    s[3] += s3;
}

static inline int32_t dot1(const int8_t *TQ_RESTRICT a, const int8_t *TQ_RESTRICT b, int32_t n)
{
    int32_t s = 0, i;
    for (i = 0; i < n; ++i) {
        s += (int16_t)a[i] * (int16_t)b[i];
    }
    return s;
}

/* one group, dilation_w 1: the valid taps of a filter row are contiguous in x and in the weights.
   Output channel outermost (its weights and requantization hoisted), four interior pixels per pass. */
static void conv_one_group(const tq_conv_t *p, const int8_t *x, int8_t *TQ_RESTRICT y)
{
    const int32_t in_h = p->in_h, in_w = p->in_w, in_c = p->in_c, out_h = p->out_h, out_w = p->out_w;
    const int32_t out_c = p->out_c, k_h = p->k_h, k_w = p->k_w, sh = p->stride_h, sw = p->stride_w;
    const int32_t dil_h = p->dil_h, pad_h = p->pad_h, pad_w = p->pad_w, batches = p->batches;
    const int32_t in_off = p->in_offset, out_off = p->out_offset, lo = p->act_min, hi = p->act_max;
    const int32_t row_len = k_w * in_c, filt = k_h * row_len;
    const size_t in_img = (size_t)in_h * in_w * in_c, out_img = (size_t)out_h * out_w * out_c;
    const size_t xstep = (size_t)sw * in_c;
    const int flat = k_h == 1 && k_w == 1 && sh == 1 && sw == 1 && pad_h == 0 && pad_w == 0 && in_h == out_h
                     && in_w == out_w;
    const int32_t *bias_full = p->bias_full, *bias = p->bias;
    /* interior columns: ix0 >= 0 and ix0 + k_w <= in_w */
    int32_t ox_lo = (pad_w + sw - 1) / sw, ox_hi = in_w - k_w + pad_w >= 0 ? (in_w - k_w + pad_w) / sw + 1 : 0;
    int32_t oc;
    if (ox_hi > out_w) {
        ox_hi = out_w;
    }
    if (ox_lo > ox_hi) {
        ox_lo = ox_hi;
    }
    for (oc = 0; oc < out_c; ++oc) {
        const int8_t *w = p->weights + (size_t)oc * filt;
        const rq_t rq = rq_make(p->mult[oc], p->shift[oc]);
        const int32_t bf = bias_full[oc], b0 = bias ? bias[oc] : 0;
        int32_t b, oy, ox;
        if (flat) {
            const int32_t n = batches * out_h * out_w;
            int32_t i = 0;
            for (; i + 4 <= n; i += 4) {
                const int8_t *xp = x + (size_t)i * in_c;
                int32_t s[4] = {0, 0, 0, 0};
                int8_t *yp = y + (size_t)i * out_c + oc;
                dot4(w, xp, xp + in_c, xp + 2 * in_c, xp + 3 * in_c, in_c, s);
                yp[0] = rq_out(&rq, wadd(bf, s[0]), out_off, lo, hi);
                yp[out_c] = rq_out(&rq, wadd(bf, s[1]), out_off, lo, hi);
                yp[2 * out_c] = rq_out(&rq, wadd(bf, s[2]), out_off, lo, hi);
                yp[3 * out_c] = rq_out(&rq, wadd(bf, s[3]), out_off, lo, hi);
            }
            for (; i < n; ++i) {
                y[(size_t)i * out_c + oc] = rq_out(&rq, wadd(bf, dot1(w, x + (size_t)i * in_c, in_c)), out_off, lo, hi);
            }
            continue;
        }
        for (b = 0; b < batches; ++b) {
            const int8_t *xb = x + (size_t)b * in_img;
            int8_t *yb = y + (size_t)b * out_img + oc;
            for (oy = 0; oy < out_h; ++oy) {
                const int32_t iy0 = oy * sh - pad_h;
                const int rows_in = iy0 >= 0 && iy0 + (k_h - 1) * dil_h < in_h;
                int8_t *yrow = yb + (size_t)oy * out_w * out_c;
                int32_t a = 0, e = 0;
                if (rows_in) {
                    a = ox_lo;
                    e = ox_hi;
                    for (ox = a; ox + 4 <= e; ox += 4) {
                        int32_t s[4] = {0, 0, 0, 0}, ky;
                        const int32_t ix0 = ox * sw - pad_w;
                        for (ky = 0; ky < k_h; ++ky) {
                            const int8_t *xp = xb + ((size_t)(iy0 + ky * dil_h) * in_w + ix0) * in_c;
                            dot4(w + (size_t)ky * row_len, xp, xp + xstep, xp + 2 * xstep, xp + 3 * xstep, row_len, s);
                        }
                        yrow[(size_t)ox * out_c] = rq_out(&rq, wadd(bf, s[0]), out_off, lo, hi);
                        yrow[(size_t)(ox + 1) * out_c] = rq_out(&rq, wadd(bf, s[1]), out_off, lo, hi);
                        yrow[(size_t)(ox + 2) * out_c] = rq_out(&rq, wadd(bf, s[2]), out_off, lo, hi);
                        yrow[(size_t)(ox + 3) * out_c] = rq_out(&rq, wadd(bf, s[3]), out_off, lo, hi);
                    }
                    for (; ox < e; ++ox) {
                        const int32_t ix0 = ox * sw - pad_w;
                        int32_t acc = bf, ky;
                        for (ky = 0; ky < k_h; ++ky) {
                            acc = wadd(acc, dot1(w + (size_t)ky * row_len,
                                                 xb + ((size_t)(iy0 + ky * dil_h) * in_w + ix0) * in_c, row_len));
                        }
                        yrow[(size_t)ox * out_c] = rq_out(&rq, acc, out_off, lo, hi);
                    }
                }
                for (ox = 0; ox < out_w; ++ox) {
                    /* border pixels: bias + sum over the valid taps of (x + in_offset) * w */
                    const int32_t ix0 = ox * sw - pad_w;
                    const int32_t kx0 = ix0 < 0 ? -ix0 : 0;
                    const int32_t kx1 = k_w < in_w - ix0 ? k_w : in_w - ix0;
                    const int32_t seg = (kx1 - kx0) * in_c;
                    int32_t acc = b0, ky;
                    if (ox == a && e > a) {
                        ox = e - 1;
                        continue;
                    }
                    for (ky = 0; ky < k_h && seg > 0; ++ky) {
                        const int32_t iy = iy0 + ky * dil_h;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        acc = wadd(acc, dot_s8_offset(xb + ((size_t)iy * in_w + ix0 + kx0) * in_c,
                                                      w + (size_t)ky * row_len + (size_t)kx0 * in_c, seg, in_off));
                    }
                    yrow[(size_t)ox * out_c] = rq_out(&rq, acc, out_off, lo, hi);
                }
            }
        }
    }
}


/* small filters (k_h * k_w * in_c <= TQ_SF_TAPS, e.g. a 3x3 stem on 1-3 channels): 16 output channels
   at a time over a transposed copy of their weights (zeros past out_c), vectorized over the channels;
   a tap outside the image reads the input zero point, which contributes exactly zero with bias_full. */
#define TQ_SF_TAPS 32
#define TQ_SF_OC 16
static inline void conv_small_filter_lanes(const tq_conv_t *p, const int8_t *x, int8_t *TQ_RESTRICT y,
                                           const int32_t lanes)
{
    const int32_t in_h = p->in_h, in_w = p->in_w, in_c = p->in_c, out_h = p->out_h, out_w = p->out_w;
    const int32_t out_c = p->out_c, k_h = p->k_h, k_w = p->k_w, sh = p->stride_h, sw = p->stride_w;
    const int32_t dil_h = p->dil_h, dil_w = p->dil_w, pad_h = p->pad_h, pad_w = p->pad_w;
    const int32_t out_off = p->out_offset, lo = p->act_min, hi = p->act_max, zp = -p->in_offset;
    const int32_t filt = k_h * k_w * in_c;
    const size_t in_img = (size_t)in_h * in_w * in_c;
    int16_t wt[TQ_SF_TAPS * TQ_SF_OC];
    int16_t patch[TQ_SF_TAPS];
    int32_t acc[TQ_SF_OC];
    rq_t rq[TQ_SF_OC];
    int32_t oc0;
    for (oc0 = 0; oc0 < out_c; oc0 += lanes) {
        const int32_t nc = out_c - oc0 < lanes ? out_c - oc0 : lanes;
        int32_t j, t, b, oy, ox;
        for (t = 0; t < filt; ++t) {
            for (j = 0; j < lanes; ++j) {
                wt[t * lanes + j] = j < nc ? p->weights[(size_t)(oc0 + j) * filt + t] : 0;
            }
        }
        for (j = 0; j < nc; ++j) {
            rq[j] = rq_make(p->mult[oc0 + j], p->shift[oc0 + j]);
        }
        for (b = 0; b < p->batches; ++b) {
            const int8_t *xb = x + (size_t)b * in_img;
            for (oy = 0; oy < out_h; ++oy) {
                const int32_t iy0 = oy * sh - pad_h;
                for (ox = 0; ox < out_w; ++ox) {
                    const int32_t ix0 = ox * sw - pad_w;
                    int8_t *yp = y + (((size_t)b * out_h + oy) * out_w + ox) * out_c + oc0;
                    int32_t ky, kx, ic;
                    t = 0;
                    for (ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = iy0 + ky * dil_h;
                        for (kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = ix0 + kx * dil_w;
                            const int valid = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
                            const int8_t *xp = xb + ((size_t)(valid ? iy : 0) * in_w + (valid ? ix : 0)) * in_c;
                            for (ic = 0; ic < in_c; ++ic) {
                                patch[t++] = (int16_t)(valid ? xp[ic] : zp);
                            }
                        }
                    }
                    for (j = 0; j < lanes; ++j) {
                        acc[j] = 0;
                    }
                    for (t = 0; t < filt; ++t) {
                        const int16_t xv = patch[t];
                        const int16_t *w = wt + t * lanes;
                        for (j = 0; j < lanes; ++j) {
                            acc[j] += xv * w[j];
                        }
                    }
                    for (j = 0; j < nc; ++j) {
                        yp[j] = rq_out(&rq[j], wadd(p->bias_full[oc0 + j], acc[j]), out_off, lo, hi);
                    }
                }
            }
        }
    }
}

/* 8 lanes for layers of at most 8 output channels (a 16-lane pass would run half empty), 16 otherwise */
static void conv_small_filter(const tq_conv_t *p, const int8_t *x, int8_t *TQ_RESTRICT y)
{
    if (p->out_c <= 8) {
        conv_small_filter_lanes(p, x, y, 8);
    } else {
        conv_small_filter_lanes(p, x, y, TQ_SF_OC);
    }
}

static void conv_pixel_general(const tq_conv_t *p, const int8_t *xb, int32_t iy0, int32_t ix0, int8_t *yp)
{
    const int32_t fc = p->filter_c;
    const int32_t groups = p->in_c / fc;
    const int32_t oc_per_group = p->out_c / groups;
    int32_t oc;
    for (oc = 0; oc < p->out_c; ++oc) {
        const int32_t g = oc / oc_per_group;
        int32_t acc = p->bias ? p->bias[oc] : 0;
        int32_t ky, kx, i;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = iy0 + ky * p->dil_h;
            if (iy < 0 || iy >= p->in_h) {
                continue;
            }
            for (kx = 0; kx < p->k_w; ++kx) {
                const int32_t ix = ix0 + kx * p->dil_w;
                const int8_t *xp, *wp;
                if (ix < 0 || ix >= p->in_w) {
                    continue;
                }
                xp = xb + ((size_t)iy * p->in_w + ix) * p->in_c + (size_t)g * fc;
                wp = p->weights + (((size_t)oc * p->k_h + ky) * p->k_w + kx) * fc;
                for (i = 0; i < fc; ++i) {
                    acc = wadd(acc, ((int32_t)xp[i] + p->in_offset) * wp[i]);
                }
            }
        }
        yp[oc] = requant(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min, p->act_max);
    }
}

void tq_conv2d(const tq_conv_t *p, const int8_t *x, int8_t *y)
{
    int32_t b, oy, ox;
    if (p->filter_c == p->in_c && p->k_h * p->k_w * p->in_c <= TQ_SF_TAPS && p->k_h * p->k_w > 1) {
        conv_small_filter(p, x, y);
        return;
    }
    if (p->filter_c == p->in_c && p->dil_w == 1) {
        conv_one_group(p, x, y);
        return;
    }
    for (b = 0; b < p->batches; ++b) {
        const int8_t *xb = x + (size_t)b * p->in_h * p->in_w * p->in_c;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                conv_pixel_general(p, xb, iy0, ix0, y + (((size_t)b * p->out_h + oy) * p->out_w + ox) * p->out_c);
            }
        }
    }
}

/* ---------------------------------------------------------------- DEPTHWISE_CONV_2D */

static void dw_accumulate(const tq_conv_t *p, const int8_t *xp, const int8_t *wp, int32_t *acc, int32_t off)
{
    const int32_t m_count = p->depth_mult;
    int32_t ic, m;
    for (ic = 0; ic < p->in_c; ++ic) {
        const int32_t xv = (int32_t)xp[ic] + off;
        const int8_t *w = wp + (size_t)ic * m_count;
        int32_t *a = acc + (size_t)ic * m_count;
        for (m = 0; m < m_count; ++m) {
            a[m] = wadd(a[m], xv * w[m]);
        }
    }
}

#define TQ_DW_CHUNK 128

/* depth multiplier 1, 3x3: acc = bias_full + the nine taps (a tap outside the image reads a row of
   input zero points, which contributes exactly zero once bias_full's in_offset * sum(w) is counted) */
static void dw_taps9(const int8_t *const *xt, const int8_t *TQ_RESTRICT w, int32_t c_out, int32_t c0, int32_t n,
                     const int32_t *TQ_RESTRICT bf, int32_t *TQ_RESTRICT acc)
{
    const int8_t *TQ_RESTRICT x0 = xt[0], *TQ_RESTRICT x1 = xt[1], *TQ_RESTRICT x2 = xt[2];
    const int8_t *TQ_RESTRICT x3 = xt[3], *TQ_RESTRICT x4 = xt[4], *TQ_RESTRICT x5 = xt[5];
    const int8_t *TQ_RESTRICT x6 = xt[6], *TQ_RESTRICT x7 = xt[7], *TQ_RESTRICT x8 = xt[8];
    const int8_t *TQ_RESTRICT w0 = w + c0, *TQ_RESTRICT w1 = w0 + c_out, *TQ_RESTRICT w2 = w1 + c_out;
    const int8_t *TQ_RESTRICT w3 = w2 + c_out, *TQ_RESTRICT w4 = w3 + c_out, *TQ_RESTRICT w5 = w4 + c_out;
    const int8_t *TQ_RESTRICT w6 = w5 + c_out, *TQ_RESTRICT w7 = w6 + c_out, *TQ_RESTRICT w8 = w7 + c_out;
    int32_t c;
    bf += c0;
    acc += c0;
    for (c = 0; c < n; ++c) {
        int32_t s = (int16_t)x0[c] * (int16_t)w0[c] + (int16_t)x1[c] * (int16_t)w1[c]
                    + (int16_t)x2[c] * (int16_t)w2[c];
        s += (int16_t)x3[c] * (int16_t)w3[c] + (int16_t)x4[c] * (int16_t)w4[c] + (int16_t)x5[c] * (int16_t)w5[c];
        s += (int16_t)x6[c] * (int16_t)w6[c] + (int16_t)x7[c] * (int16_t)w7[c] + (int16_t)x8[c] * (int16_t)w8[c];
        acc[c] = wadd(bf[c], s);
    }
}

static void dw_tap(const int8_t *TQ_RESTRICT x, const int8_t *TQ_RESTRICT w, int32_t n, int32_t *TQ_RESTRICT acc)
{
    int32_t c;
    for (c = 0; c < n; ++c) {
        acc[c] = wadd(acc[c], (int16_t)x[c] * (int16_t)w[c]);
    }
}

#define TQ_DW_MAX_TAPS 64

void tq_depthwise_conv2d(const tq_conv_t *p, const int8_t *x, int8_t *y, int32_t *acc, int8_t *ring,
                         int in_place)
{
    const size_t row_bytes = (size_t)p->in_w * p->in_c;
    const int32_t c_out = p->out_c, k_h = p->k_h, k_w = p->k_w, in_h = p->in_h, in_w = p->in_w;
    const int32_t out_off = p->out_offset, lo = p->act_min, hi = p->act_max;
    const int fast = p->depth_mult == 1 && k_h * k_w <= TQ_DW_MAX_TAPS;
    int8_t zrow[TQ_DW_CHUNK];
    int any_slow = 0;
    int32_t b, oy, ox, c;
    memset(zrow, (int)(int8_t)(-p->in_offset), sizeof zrow);
    for (c = 0; c < c_out; ++c) {
        any_slow |= rq_make(p->mult[c], p->shift[c]).slow;
    }
    for (b = 0; b < p->batches; ++b) {
        const int8_t *xb = x + (size_t)b * p->in_h * row_bytes;
        int8_t *yb = y + (size_t)b * p->out_h * p->out_w * c_out;
        int32_t loaded = -1; /* in place: the highest input row copied into the ring */
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            const int rows_in = iy0 >= 0 && iy0 + (p->k_h - 1) * p->dil_h < p->in_h;
            int32_t ky;
            if (in_place) {
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t r = iy0 + ky;
                    if (r >= 0 && r < p->in_h && r > loaded) {
                        memcpy(ring + (size_t)(r % p->k_h) * row_bytes, xb + (size_t)r * row_bytes, row_bytes);
                        loaded = r;
                    }
                }
            }
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                int8_t *yp = yb + ((size_t)oy * p->out_w + ox) * c_out;
                int32_t kx;
                if (fast) {
                    const int8_t *tap[TQ_DW_MAX_TAPS];
                    const int8_t *xt[TQ_DW_MAX_TAPS];
                    int32_t c0, t;
                    for (ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = iy0 + ky * p->dil_h;
                        const int8_t *xrow = iy < 0 || iy >= in_h ? 0
                                             : in_place ? ring + (size_t)(iy % k_h) * row_bytes
                                                        : xb + (size_t)iy * row_bytes;
                        for (kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = ix0 + kx * p->dil_w;
                            tap[ky * k_w + kx] = xrow && ix >= 0 && ix < in_w ? xrow + (size_t)ix * c_out : 0;
                        }
                    }
                    for (c0 = 0; c0 < c_out; c0 += TQ_DW_CHUNK) {
                        const int32_t n = c_out - c0 < TQ_DW_CHUNK ? c_out - c0 : TQ_DW_CHUNK;
                        for (t = 0; t < k_h * k_w; ++t) {
                            xt[t] = tap[t] ? tap[t] + c0 : zrow;
                        }
                        if (k_h * k_w == 9) {
                            dw_taps9(xt, p->weights, c_out, c0, n, p->bias_full, acc);
                        } else {
                            memcpy(acc + c0, p->bias_full + c0, sizeof(int32_t) * (size_t)n);
                            for (t = 0; t < k_h * k_w; ++t) {
                                dw_tap(xt[t], p->weights + (size_t)t * c_out + c0, n, acc + c0);
                            }
                        }
                    }
                } else {
                    const int interior = rows_in && ix0 >= 0 && ix0 + (p->k_w - 1) * p->dil_w < p->in_w;
                    const int32_t off = interior ? 0 : p->in_offset;
                    if (interior) {
                        memcpy(acc, p->bias_full, sizeof(int32_t) * (size_t)c_out);
                    } else if (p->bias) {
                        memcpy(acc, p->bias, sizeof(int32_t) * (size_t)c_out);
                    } else {
                        memset(acc, 0, sizeof(int32_t) * (size_t)c_out);
                    }
                    for (ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = iy0 + ky * p->dil_h;
                        const int8_t *xrow;
                        if (iy < 0 || iy >= p->in_h) {
                            continue;
                        }
                        xrow = in_place ? ring + (size_t)(iy % p->k_h) * row_bytes : xb + (size_t)iy * row_bytes;
                        for (kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ix0 + kx * p->dil_w;
                            if (ix < 0 || ix >= p->in_w) {
                                continue;
                            }
                            dw_accumulate(p, xrow + (size_t)ix * p->in_c,
                                          p->weights + ((size_t)ky * p->k_w + kx) * c_out, acc, off);
                        }
                    }
                }
                if (any_slow) {
                    for (c = 0; c < c_out; ++c) {
                        yp[c] = requant(acc[c], p->mult[c], p->shift[c], out_off, lo, hi);
                    }
                } else {
                    for (c = 0; c < c_out; ++c) {
                        const rq_t rq = rq_make(p->mult[c], p->shift[c]);
                        yp[c] = (int8_t)clamp32(rq_fast(&rq, acc[c]) + out_off, lo, hi);
                    }
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- FULLY_CONNECTED */

void tq_fully_connected(const tq_fc_t *p, const int8_t *x, int8_t *y)
{
    const int32_t n = p->in_depth, out_depth = p->out_depth, batches = p->batches;
    const int32_t out_off = p->out_offset, lo = p->act_min, hi = p->act_max;
    const int8_t *weights = p->weights;
    const int32_t *bias_full = p->bias_full, *mult = p->mult, *shift = p->shift;
    int32_t b, o;
    for (b = 0; b < batches; ++b) {
        const int8_t *xb = x + (size_t)b * n;
        int8_t *yb = y + (size_t)b * out_depth;
        for (o = 0; o + 4 <= out_depth; o += 4) {
            const int8_t *w0 = weights + (size_t)o * n;
            int32_t s[4] = {0, 0, 0, 0}, j;
            dot4(xb, w0, w0 + n, w0 + 2 * n, w0 + 3 * n, n, s);
            for (j = 0; j < 4; ++j) {
                const rq_t rq = rq_make(mult[o + j], shift[o + j]);
                yb[o + j] = rq_out(&rq, wadd(bias_full[o + j], s[j]), out_off, lo, hi);
            }
        }
        for (; o < out_depth; ++o) {
            const rq_t rq = rq_make(mult[o], shift[o]);
            yb[o] = rq_out(&rq, wadd(bias_full[o], dot1(xb, weights + (size_t)o * n, n)), out_off, lo, hi);
        }
    }
}

/* ---------------------------------------------------------------- pooling */

void tq_avg_pool(const tq_pool_t *p, const int8_t *x, int8_t *y, int32_t *acc)
{
    const int32_t ch = p->channels;
    int32_t b, oy, ox, c;
    for (b = 0; b < p->batches; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
            const int32_t fy1 = p->k_h < p->in_h - iy0 ? p->k_h : p->in_h - iy0;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
                const int32_t fx1 = p->k_w < p->in_w - ix0 ? p->k_w : p->in_w - ix0;
                const int32_t count = (fy1 - fy0) * (fx1 - fx0);
                int8_t *yp = y + (((size_t)b * p->out_h + oy) * p->out_w + ox) * ch;
                int32_t fy, fx;
                memset(acc, 0, sizeof(int32_t) * (size_t)ch);
                for (fy = fy0; fy < fy1; ++fy) {
                    for (fx = fx0; fx < fx1; ++fx) {
                        const int8_t *xp = x + (((size_t)b * p->in_h + iy0 + fy) * p->in_w + ix0 + fx) * ch;
                        for (c = 0; c < ch; ++c) {
                            acc[c] += xp[c];
                        }
                    }
                }
                for (c = 0; c < ch; ++c) {
                    int32_t a = acc[c];
                    if (count > 0) {
                        a = a > 0 ? (a + count / 2) / count : (a - count / 2) / count;
                    }
                    yp[c] = (int8_t)clamp32(a, p->act_min, p->act_max);
                }
            }
        }
    }
}

void tq_max_pool(const tq_pool_t *p, const int8_t *x, int8_t *y)
{
    const int32_t ch = p->channels;
    int32_t b, oy, ox, c;
    for (b = 0; b < p->batches; ++b) {
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            const int32_t fy0 = iy0 < 0 ? -iy0 : 0;
            const int32_t fy1 = p->k_h < p->in_h - iy0 ? p->k_h : p->in_h - iy0;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                const int32_t fx0 = ix0 < 0 ? -ix0 : 0;
                const int32_t fx1 = p->k_w < p->in_w - ix0 ? p->k_w : p->in_w - ix0;
                int8_t *yp = y + (((size_t)b * p->out_h + oy) * p->out_w + ox) * ch;
                int32_t fy, fx;
                for (c = 0; c < ch; ++c) {
                    yp[c] = -128;
                }
                for (fy = fy0; fy < fy1; ++fy) {
                    for (fx = fx0; fx < fx1; ++fx) {
                        const int8_t *xp = x + (((size_t)b * p->in_h + iy0 + fy) * p->in_w + ix0 + fx) * ch;
                        for (c = 0; c < ch; ++c) {
                            yp[c] = xp[c] > yp[c] ? xp[c] : yp[c];
                        }
                    }
                }
                for (c = 0; c < ch; ++c) {
                    yp[c] = (int8_t)clamp32(yp[c], p->act_min, p->act_max);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- ADD / MUL */

static inline int8_t add_one(const tq_binary_t *p, int32_t a, int32_t b)
{
    const int32_t sa = mbqm(wshl(a + p->a_offset, p->left_shift), p->a_mult, p->a_shift);
    const int32_t sb = mbqm(wshl(b + p->b_offset, p->left_shift), p->b_mult, p->b_shift);
    return (int8_t)clamp32(mbqm(wadd(sa, sb), p->out_mult, p->out_shift) + p->out_offset, p->act_min, p->act_max);
}

static inline int8_t mul_one(const tq_binary_t *p, int32_t a, int32_t b)
{
    const int32_t prod = (a + p->a_offset) * (b + p->b_offset);
    return (int8_t)clamp32(mbqm(prod, p->out_mult, p->out_shift) + p->out_offset, p->act_min, p->act_max);
}

#define TQ_BINARY_LOOP(OP)                                                                          \
    do {                                                                                            \
        if (!p->broadcast) {                                                                        \
            const int32_t n = p->dims[0] * p->dims[1] * p->dims[2] * p->dims[3];                    \
            int32_t i;                                                                              \
            for (i = 0; i < n; ++i) {                                                               \
                y[i] = OP(p, a[i], b[i]);                                                           \
            }                                                                                       \
        } else {                                                                                    \
            int32_t i0, i1, i2, i3;                                                                 \
            int8_t *yp = y;                                                                         \
            for (i0 = 0; i0 < p->dims[0]; ++i0) {                                                   \
                for (i1 = 0; i1 < p->dims[1]; ++i1) {                                               \
                    for (i2 = 0; i2 < p->dims[2]; ++i2) {                                           \
                        const int8_t *ap = a + i0 * p->a_stride[0] + i1 * p->a_stride[1] + i2 * p->a_stride[2]; \
                        const int8_t *bp = b + i0 * p->b_stride[0] + i1 * p->b_stride[1] + i2 * p->b_stride[2]; \
                        for (i3 = 0; i3 < p->dims[3]; ++i3) {                                       \
                            *yp++ = OP(p, ap[i3 * p->a_stride[3]], bp[i3 * p->b_stride[3]]);        \
                        }                                                                           \
                    }                                                                               \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    } while (0)

void tq_add(const tq_binary_t *p, const int8_t *a, const int8_t *b, int8_t *y)
{
    const rq_t ra = rq_make(p->a_mult, p->a_shift), rb = rq_make(p->b_mult, p->b_shift);
    const rq_t ro = rq_make(p->out_mult, p->out_shift);
    if (!p->broadcast && !ra.slow && !rb.slow && !ro.slow && p->left_shift >= 0 && p->left_shift <= 31) {
        const int32_t n = p->dims[0] * p->dims[1] * p->dims[2] * p->dims[3];
        const int32_t a_off = p->a_offset, b_off = p->b_offset, ls = p->left_shift;
        const int32_t out_off = p->out_offset, lo = p->act_min, hi = p->act_max;
        int32_t i;
        for (i = 0; i < n; ++i) {
            const int32_t sa = rq_fast(&ra, wshl(a[i] + a_off, ls));
            const int32_t sb = rq_fast(&rb, wshl(b[i] + b_off, ls));
            y[i] = (int8_t)clamp32(rq_fast(&ro, wadd(sa, sb)) + out_off, lo, hi);
        }
        return;
    }
    TQ_BINARY_LOOP(add_one);
}

void tq_mul(const tq_binary_t *p, const int8_t *a, const int8_t *b, int8_t *y)
{
    const rq_t ro = rq_make(p->out_mult, p->out_shift);
    if (!p->broadcast && !ro.slow) {
        const int32_t n = p->dims[0] * p->dims[1] * p->dims[2] * p->dims[3];
        const int32_t a_off = p->a_offset, b_off = p->b_offset;
        const int32_t out_off = p->out_offset, lo = p->act_min, hi = p->act_max;
        int32_t i;
        for (i = 0; i < n; ++i) {
            const int32_t prod = (a[i] + a_off) * (b[i] + b_off);
            y[i] = (int8_t)clamp32(rq_fast(&ro, prod) + out_off, lo, hi);
        }
        return;
    }
    TQ_BINARY_LOOP(mul_one);
}

/* ---------------------------------------------------------------- PAD */

void tq_pad(const tq_pad_t *p, const int8_t *x, int8_t *y)
{
    const size_t total = (size_t)p->out_dims[0] * p->out_dims[1] * p->out_dims[2] * p->out_dims[3];
    int32_t i0, i1, i2;
    memset(y, (int)(int8_t)p->value, total);
    for (i0 = 0; i0 < p->in_dims[0]; ++i0) {
        for (i1 = 0; i1 < p->in_dims[1]; ++i1) {
            for (i2 = 0; i2 < p->in_dims[2]; ++i2) {
                const int8_t *src = x + (((size_t)i0 * p->in_dims[1] + i1) * p->in_dims[2] + i2) * p->in_dims[3];
                int8_t *dst = y + (((size_t)(i0 + p->before[0]) * p->out_dims[1] + i1 + p->before[1])
                                   * p->out_dims[2] + i2 + p->before[2]) * p->out_dims[3] + p->before[3];
                memcpy(dst, src, (size_t)p->in_dims[3]);
            }
        }
    }
}

/* ---------------------------------------------------------------- MEAN */

void tq_mean(const tq_mean_t *p, const int8_t *x, int8_t *y, int32_t *acc)
{
    int32_t o, r, i;
    const int32_t zp_total = p->in_zp * p->reduced;
    for (o = 0; o < p->outer; ++o) {
        memset(acc, 0, sizeof(int32_t) * (size_t)p->inner);
        for (r = 0; r < p->reduced; ++r) {
            const int8_t *xp = x + ((size_t)o * p->reduced + r) * p->inner;
            for (i = 0; i < p->inner; ++i) {
                acc[i] += xp[i];
            }
        }
        for (i = 0; i < p->inner; ++i) {
            const int32_t v = mbqm(wsub(acc[i], zp_total), p->mult, p->shift) + p->out_zp;
            y[(size_t)o * p->inner + i] = (int8_t)clamp32(v, -128, 127);
        }
    }
}

/* ---------------------------------------------------------------- gemmlowp fixed point */

static inline int32_t srmpot_left(int32_t x, int e) /* SaturatingRoundingMultiplyByPOT<e>, e > 0 */
{
    const int32_t threshold = (int32_t)(((uint32_t)1 << (31 - e)) - 1);
    if (x > threshold) {
        return TQ_INT32_MAX;
    }
    if (x < -threshold) {
        return TQ_INT32_MIN;
    }
    return wshl(x, e);
}

static int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t constant_term = 1895147668;
    const int32_t constant_1_over_3 = 715827883;
    const int32_t x = wadd(a, (int32_t)1 << 28);
    const int32_t x2 = srdhm(x, x);
    const int32_t x3 = srdhm(x2, x);
    const int32_t x4 = srdhm(x2, x2);
    const int32_t x4_over_4 = rdbpot(x4, 2);
    const int32_t poly = rdbpot(wadd(srdhm(wadd(x4_over_4, x3), constant_1_over_3), x2), 1);
    return wadd(constant_term, srdhm(constant_term, wadd(x, poly)));
}

/* exp(a) for a < 0 in Q(k).(31-k); the result in Q0.31 */
static int32_t exp_on_negative_values(int32_t a, int k)
{
    static const int32_t multipliers[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int fractional = 31 - k;
    const int32_t one_quarter = (int32_t)1 << (fractional - 2);
    const int32_t mask = one_quarter - 1;
    const int32_t a_mod = wsub(a & mask, one_quarter);
    const int32_t remainder = wsub(a_mod, a);
    int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(k > 0 ? srmpot_left(a_mod, k) : a_mod);
    int e;
    for (e = -2; e <= 4; ++e) {
        if (k > e && (remainder & ((int32_t)1 << (fractional + e)))) {
            result = srdhm(result, multipliers[e + 2]);
        }
    }
    if (k > 5 && a < -((int32_t)1 << (36 - k))) {
        result = 0;
    }
    return a == 0 ? TQ_INT32_MAX : result;
}

/* 1 / (1 + a) for a in [0, 1) in Q0.31 */
static int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int64_t sum = (int64_t)a + TQ_INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = wadd(1515870810, srdhm(half_denominator, -1010580540));
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus = wsub((int32_t)1 << 29, srdhm(half_denominator, x));
        x = wadd(x, srmpot_left(srdhm(x, one_minus), 2));
    }
    return srmpot_left(x, 1);
}

static int clz32(uint32_t x)
{
#if defined(__GNUC__)
    return x == 0 ? 32 : __builtin_clz(x);
#else
    int n = 0;
    if (x == 0) {
        return 32;
    }
    while (!(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
#endif
}

/* ---------------------------------------------------------------- SOFTMAX */

static inline int32_t softmax_exp(const tq_softmax_t *p, int32_t diff)
{
    return exp_on_negative_values(srdhm(wshl(diff, p->input_left_shift), p->input_multiplier), 5);
}

void tq_softmax(const tq_softmax_t *p, const int8_t *x, int8_t *y)
{
    int32_t r, c;
    for (r = 0; r < p->rows; ++r) {
        const int8_t *xr = x + (size_t)r * p->depth;
        int8_t *yr = y + (size_t)r * p->depth;
        int32_t max_in_row = -128, sum_of_exps = 0, shifted_scale;
        int headroom_plus_one, exponent;
        for (c = 0; c < p->depth; ++c) {
            max_in_row = xr[c] > max_in_row ? xr[c] : max_in_row;
        }
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)xr[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t e = rdbpot(softmax_exp(p, diff), 12); /* >= 0; saturates (4096 or more maxima) */
                sum_of_exps = e > TQ_INT32_MAX - sum_of_exps ? TQ_INT32_MAX : sum_of_exps + e;
            }
        }
        headroom_plus_one = clz32((uint32_t)sum_of_exps);
        shifted_scale = one_over_one_plus_x_for_x_in_0_1(
            (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - ((uint32_t)1 << 31)));
        exponent = (12 - headroom_plus_one) + 31 - 8;
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)xr[c] - max_in_row;
            if (diff >= p->diff_min) {
                /* sum_of_exps >= 2^28 (512 or more values at the row's maximum) puts the exponent past 31,
                   where a 32-bit shift is undefined (TFLite Micro's interpreter aborts on such rows); the
                   quotient of a value in [0, 2^31) by 2^32 or more rounds to 0 */
                const int32_t unsat = exponent > 31 ? 0
                                      : rdbpot(srdhm(shifted_scale, softmax_exp(p, diff)), exponent);
                yr[c] = (int8_t)clamp32(unsat - 128, -128, 127);
            } else {
                yr[c] = -128;
            }
        }
    }
}

/* ---------------------------------------------------------------- LOGISTIC */

static int32_t logistic_q4(int32_t a)
{
    int32_t positive;
    if (a == 0) {
        return (int32_t)1 << 30;
    }
    positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(a > 0 ? wsub(0, a) : a, 4));
    return a > 0 ? positive : wsub(TQ_INT32_MAX, positive);
}

void tq_logistic(const tq_logistic_t *p, const int8_t *x, int8_t *y)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t input = (int32_t)x[i] - p->in_zp;
        if (input <= -p->range_radius) {
            y[i] = -128;
        } else if (input >= p->range_radius) {
            y[i] = 127;
        } else {
            const int32_t in_q4 = mbqm(input, p->input_multiplier, p->input_left_shift);
            const int32_t out = rdbpot(logistic_q4(in_q4), 23);
            y[i] = (int8_t)clamp32(out - 128, -128, 127);
        }
    }
}

/* ---------------------------------------------------------------- QUANTIZE / DEQUANTIZE */

void tq_requantize(const tq_requantize_t *p, const int8_t *x, int8_t *y)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t v = mbqm((int32_t)x[i] - p->in_zp, p->mult, p->shift) + p->out_zp;
        y[i] = (int8_t)clamp32(v, -128, 127);
    }
}

static int32_t round_half_away_f32(float v) /* std::round on a float, clamped far outside int8 */
{
    float t;
    float diff;
    if (!(v == v)) {
        return 0;
    }
    if (v > 1.0e6f) {
        return 1000000;
    }
    if (v < -1.0e6f) {
        return -1000000;
    }
    t = (float)(int32_t)v;
    diff = v - t;
    if (diff >= 0.5f) {
        t += 1.0f;
    } else if (diff <= -0.5f) {
        t -= 1.0f;
    }
    return (int32_t)t;
}

void tq_quantize_f32(const float *x, int8_t *y, int32_t size, float scale, int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        y[i] = (int8_t)clamp32(round_half_away_f32(x[i] / scale) + zero_point, -128, 127);
    }
}

void tq_dequantize_f32(const int8_t *x, float *y, int32_t size, double scale, int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        y[i] = (float)(scale * (double)((int32_t)x[i] - zero_point));
    }
}
