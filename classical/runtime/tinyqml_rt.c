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

/* ---------------------------------------------------------------- CONV_2D */

static int32_t dot_s8(const int8_t *a, const int8_t *b, int32_t n)
{
    int32_t s = 0, i;
    for (i = 0; i < n; ++i) {
        s += (int16_t)a[i] * (int16_t)b[i];
    }
    return s;
}

/* sum of (a[i] + off) * b[i]: |a + off| <= 255, so each product fits in int16 */
static int32_t dot_s8_offset(const int8_t *a, const int8_t *b, int32_t n, int32_t off)
{
    int32_t s = 0, i;
    for (i = 0; i < n; ++i) {
        s += (int16_t)(a[i] + off) * (int16_t)b[i];
    }
    return s;
}

static void conv_pixel_fast(const tq_conv_t *p, const int8_t *xb, int32_t iy0, int32_t ix0, int interior,
                            int8_t *yp)
{
    /* one group, dilation_w 1: the valid taps of a filter row are contiguous in x and in the weights */
    const int32_t row_len = p->k_w * p->in_c;
    const int32_t filt = p->k_h * row_len;
    const int32_t kx0 = ix0 < 0 ? -ix0 : 0;
    const int32_t kx1 = p->k_w < p->in_w - ix0 ? p->k_w : p->in_w - ix0;
    const int32_t seg = (kx1 - kx0) * p->in_c;
    int32_t oc, ky;
    for (oc = 0; oc < p->out_c; ++oc) {
        const int8_t *w0 = p->weights + (size_t)oc * filt + (size_t)kx0 * p->in_c;
        int32_t acc;
        if (interior) {
            acc = p->bias_full[oc];
            for (ky = 0; ky < p->k_h; ++ky) {
                acc += dot_s8(xb + ((size_t)(iy0 + ky * p->dil_h) * p->in_w + ix0) * p->in_c,
                              w0 + (size_t)ky * row_len, row_len);
            }
        } else {
            acc = p->bias ? p->bias[oc] : 0;
            for (ky = 0; ky < p->k_h; ++ky) {
                const int32_t iy = iy0 + ky * p->dil_h;
                if (iy < 0 || iy >= p->in_h || seg <= 0) {
                    continue;
                }
                acc += dot_s8_offset(xb + ((size_t)iy * p->in_w + ix0 + kx0) * p->in_c, w0 + (size_t)ky * row_len,
                                     seg, p->in_offset);
            }
        }
        yp[oc] = requant(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min, p->act_max);
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
                    acc += ((int32_t)xp[i] + p->in_offset) * wp[i];
                }
            }
        }
        yp[oc] = requant(acc, p->mult[oc], p->shift[oc], p->out_offset, p->act_min, p->act_max);
    }
}

void tq_conv2d(const tq_conv_t *p, const int8_t *x, int8_t *y)
{
    const int one_group = p->filter_c == p->in_c;
    int32_t b, oy, ox;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *xb = x + (size_t)b * p->in_h * p->in_w * p->in_c;
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_h;
            const int rows_in = iy0 >= 0 && iy0 + (p->k_h - 1) * p->dil_h < p->in_h;
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_w;
                int8_t *yp = y + (((size_t)b * p->out_h + oy) * p->out_w + ox) * p->out_c;
                const int interior = rows_in && ix0 >= 0 && ix0 + (p->k_w - 1) * p->dil_w < p->in_w;
                if (one_group && p->dil_w == 1) {
                    conv_pixel_fast(p, xb, iy0, ix0, interior, yp);
                } else {
                    conv_pixel_general(p, xb, iy0, ix0, yp);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- DEPTHWISE_CONV_2D */

static void dw_accumulate(const tq_conv_t *p, const int8_t *xp, const int8_t *wp, int32_t *acc, int32_t off)
{
    const int32_t c_out = p->out_c;
    int32_t c;
    if (p->depth_mult == 1) {
        if (off == 0) {
            for (c = 0; c < c_out; ++c) {
                acc[c] += (int32_t)xp[c] * wp[c];
            }
        } else {
            for (c = 0; c < c_out; ++c) {
                acc[c] += ((int32_t)xp[c] + off) * wp[c];
            }
        }
    } else {
        const int32_t m_count = p->depth_mult;
        int32_t ic, m;
        for (ic = 0; ic < p->in_c; ++ic) {
            const int32_t xv = (int32_t)xp[ic] + off;
            const int8_t *w = wp + (size_t)ic * m_count;
            int32_t *a = acc + (size_t)ic * m_count;
            for (m = 0; m < m_count; ++m) {
                a[m] += xv * w[m];
            }
        }
    }
}

void tq_depthwise_conv2d(const tq_conv_t *p, const int8_t *x, int8_t *y, int32_t *acc, int8_t *ring,
                         int in_place)
{
    const size_t row_bytes = (size_t)p->in_w * p->in_c;
    const int32_t c_out = p->out_c;
    int32_t b, oy, ox, c;
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
                const int interior = rows_in && ix0 >= 0 && ix0 + (p->k_w - 1) * p->dil_w < p->in_w;
                const int32_t off = interior ? 0 : p->in_offset;
                int8_t *yp = yb + ((size_t)oy * p->out_w + ox) * c_out;
                int32_t kx;
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
                for (c = 0; c < c_out; ++c) {
                    yp[c] = requant(acc[c], p->mult[c], p->shift[c], p->out_offset, p->act_min, p->act_max);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- FULLY_CONNECTED */

void tq_fully_connected(const tq_fc_t *p, const int8_t *x, int8_t *y)
{
    const int32_t n = p->in_depth;
    int32_t b, o, i;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *xb = x + (size_t)b * n;
        int8_t *yb = y + (size_t)b * p->out_depth;
        for (o = 0; o + 4 <= p->out_depth; o += 4) {
            const int8_t *w0 = p->weights + (size_t)o * n;
            int32_t a0 = p->bias_full[o], a1 = p->bias_full[o + 1], a2 = p->bias_full[o + 2],
                    a3 = p->bias_full[o + 3];
            for (i = 0; i < n; ++i) {
                const int32_t xv = xb[i];
                a0 += xv * w0[i];
                a1 += xv * w0[i + n];
                a2 += xv * w0[i + 2 * n];
                a3 += xv * w0[i + 3 * n];
            }
            yb[o] = requant(a0, p->mult[o], p->shift[o], p->out_offset, p->act_min, p->act_max);
            yb[o + 1] = requant(a1, p->mult[o + 1], p->shift[o + 1], p->out_offset, p->act_min, p->act_max);
            yb[o + 2] = requant(a2, p->mult[o + 2], p->shift[o + 2], p->out_offset, p->act_min, p->act_max);
            yb[o + 3] = requant(a3, p->mult[o + 3], p->shift[o + 3], p->out_offset, p->act_min, p->act_max);
        }
        for (; o < p->out_depth; ++o) {
            const int8_t *w0 = p->weights + (size_t)o * n;
            int32_t acc = p->bias_full[o];
            for (i = 0; i < n; ++i) {
                acc += (int32_t)xb[i] * w0[i];
            }
            yb[o] = requant(acc, p->mult[o], p->shift[o], p->out_offset, p->act_min, p->act_max);
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
    TQ_BINARY_LOOP(add_one);
}

void tq_mul(const tq_binary_t *p, const int8_t *a, const int8_t *b, int8_t *y)
{
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
                sum_of_exps = wadd(sum_of_exps, rdbpot(softmax_exp(p, diff), 12));
            }
        }
        headroom_plus_one = clz32((uint32_t)sum_of_exps);
        shifted_scale = one_over_one_plus_x_for_x_in_0_1(
            (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - ((uint32_t)1 << 31)));
        exponent = (12 - headroom_plus_one) + 31 - 8;
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)xr[c] - max_in_row;
            if (diff >= p->diff_min) {
                const int32_t unsat = rdbpot(srdhm(shifted_scale, softmax_exp(p, diff)), exponent);
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
