/* lmcli/models/transformer.py in C, for generating text on the CPU.
 *
 * The same modules in the same order and under the same names, so that the two files read side
 * by side: make_norm, rotary_tables, apply_rotary, sinusoidal_table, CausalSelfAttention, MLP,
 * Block, Transformer. It runs the weights of a .safetensors file in torch's own layout (a
 * Linear's weight is (out, in)), found by their state-dict names, each checked for its shape
 * before it is read; lmcli/sampling/engines/c_transformer.py maps the file and passes pointers.
 *
 * Why a second engine at all: a generated token of a small model is a chain of ~200 tiny
 * operations, and torch (or numpy) spends microseconds of dispatch on each where the arithmetic
 * takes less; here a whole forward is one call. It is for inference only: eval mode (no
 * dropout), float32, one thread.
 *
 * Two liberties, both invisible in the logits: a KV cache whose keys are stored transposed
 * (D, context), so that the scores of one query are one pass over contiguous memory, and a
 * transposed copy (in, out) of each matrix, made once at open, which the register blocks of
 * every product read (a prompt's rows, a refill's, a decoding step's one row); only a matrix
 * whose outputs are not a multiple of 16 (a vocabulary's head) is read in the file's (out, in)
 * layout, a dot product per output.
 *
 * Shapes as in transformer.py: B samples, T new positions, S positions attended over, C width,
 * H query heads, K kv heads, D head size, V vocabulary, W a local layer's window; rows of the
 * work arrays are (sample, position), b * T + t.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* -- what the binding passes: the config and every tensor of the file ------------------------ */

typedef struct {               /* lmcli.config.ModelConfig, as strings and integers */
    int64_t vocab_size, layers, width, heads, kv_heads, context, window, tie, bias;
    const char *pos, *norm, *norm_placement, *mlp, *window_pattern;
} Config;

typedef struct {               /* one tensor of the .safetensors file (float32, row-major) */
    const char *name;
    int64_t rank, shape[2];
    const float *data;
} Tensor;

/* The binding checks that its ctypes structs match these: sizes, then each field's offset. */
int64_t lm_layout(int64_t *out)
{
    int64_t v[] = {sizeof(Config), offsetof(Config, vocab_size), offsetof(Config, bias),
                   offsetof(Config, pos), offsetof(Config, window_pattern), sizeof(Tensor),
                   offsetof(Tensor, name), offsetof(Tensor, rank), offsetof(Tensor, shape),
                   offsetof(Tensor, data)};
    memcpy(out, v, sizeof v);
    return (int64_t)(sizeof v / sizeof v[0]);
}

/* -- the model: what Transformer.__init__ builds ---------------------------------------------- */

typedef struct { const float *weight, *bias; int layernorm; } Norm;   /* make_norm */

typedef struct {               /* nn.Linear: y = x @ weight^T + bias */
    const float *weight;       /* (out, in), the file's */
    const float *bias;         /* (out) or NULL */
    float *weight_t;           /* (in, out), made at open */
    int64_t in, out;
} Linear;

enum { GELU, RELU2, SWIGLU };

typedef struct {
    Norm norm1, norm2;
    Linear qkv, attn_proj;     /* CausalSelfAttention: qkv (H*D + 2*K*D, C), proj (C, C) */
    Linear fc, mlp_proj;       /* MLP: fc (hidden or 2 * hidden, C), proj (C, hidden) */
    int64_t window;            /* a sliding-window layer's W, 0 for a global layer */
    float *keys, *values;      /* the KV cache: (B, K, D, context) and (B, K, context, D) */
} Block;

typedef struct {
    int64_t V, L, C, H, K, D, context, hidden, pre_norm, mlp;
    const float *wte, *wpe;    /* (V, C), learned positions (context, C) or NULL */
    float *sinusoid;           /* (context, C) or NULL */
    float *rope_cos, *rope_sin;/* (context, D/2) each, or NULL */
    Block *blocks;
    Norm norm;                 /* the final norm of a pre-norm model */
    Linear head;               /* (V, C): the embedding itself when tied */
    int64_t batch, pos;        /* the cache: samples, positions written */
    float *scratch;
    int64_t scratch_rows;
} Model;

static const float EPS = 1e-5f;           /* LayerNorm's and RMSNorm's */
static const float ROPE_BASE = 10000.0f;

/* Eight floats as one value (a GCC/clang vector extension): the compiler keeps a block's
 * accumulators in registers, which it does not reliably do for a plain 2-D array. */
typedef float vec8 __attribute__((vector_size(32)));

static inline vec8 load8(const float *p)
{
    vec8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, vec8 v) { memcpy(p, &v, sizeof v); }

typedef int32_t int8v __attribute__((vector_size(32)));

/* where mask (a comparison's -1 or 0 per lane): a, else b */
static inline vec8 select8(int8v mask, vec8 a, vec8 b)
{
    int8v ia, ib;
    memcpy(&ia, &a, sizeof ia);
    memcpy(&ib, &b, sizeof ib);
    const int8v bits = (ia & mask) | (ib & ~mask);
    vec8 out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* e^x of eight floats: x = n ln2 + r, |r| <= ln2/2, e^r by its Taylor series to r^7 (error
 * below 1e-8), times 2^n built in the exponent bits. Inputs below -87 give ~1e-38, not 0. */
static inline vec8 exp8(vec8 x)
{
    const vec8 low = {-87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f, -87.0f};
    const vec8 high = low + 175.0f;
    x = select8(x < low, low, x);
    x = select8(x > high, high, x);
    const vec8 shift = low * 0.0f + 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */
    const vec8 n = (x * 1.44269504088896341f + shift) - shift;
    const vec8 r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  /* ln2, in two */
    vec8 p = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int8v bits = (__builtin_convertvector(n, int8v) + 127) << 23;  /* 2^n */
    vec8 scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* erf of eight floats (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7): torch's GELU
 * is the exact-erf one, and erff per element was a quarter of a refill's time. */
static inline vec8 erf8(vec8 x)
{
    const int8v negative = x < 0.0f;
    const vec8 ax = select8(negative, -x, x);
    const vec8 t = 1.0f / (1.0f + 0.3275911f * ax);
    vec8 p = t * 1.061405429f - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const vec8 y = 1.0f - p * t * exp8(-ax * ax);
    return select8(negative, -y, y);
}

static inline float sum8(vec8 v)
{
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

static float dot(const float *a, const float *b, int64_t n)
{
    vec8 acc0 = {0}, acc1 = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 += load8(a + i) * load8(b + i);
        acc1 += load8(a + i + 8) * load8(b + i + 8);
    }
    for (; i + 8 <= n; i += 8)
        acc0 += load8(a + i) * load8(b + i);
    float total = sum8(acc0 + acc1);
    for (; i < n; i++)
        total += a[i] * b[i];
    return total;
}

/* y (out) = x (in) @ weight^T + bias for one row (a decoding step), out a multiple of 16, from
 * weight_t: 64 outputs at a time in eight accumulators (as many independent chains as the FMA
 * units keep in flight), reading 256 contiguous bytes of each weight_t row; then 16 at a time,
 * in four interleaved sums over `in`. No horizontal sum per output. */
static void linear_row(const Linear *l, const float *restrict x, float *restrict y)
{
    const int64_t in = l->in, out = l->out;
    const float *w = l->weight_t;
    const vec8 zero = {0};
    int64_t o = 0;
    for (; o + 64 <= out; o += 64) {
        vec8 acc[8] = {zero, zero, zero, zero, zero, zero, zero, zero};
        for (int64_t i = 0; i < in; i++) {
            const float *wi = w + i * out + o;
            for (int k = 0; k < 8; k++)
                acc[k] += x[i] * load8(wi + 8 * k);
        }
        for (int k = 0; k < 8; k++)
            store8(y + o + 8 * k, l->bias ? acc[k] + load8(l->bias + o + 8 * k) : acc[k]);
    }
    for (; o < out; o += 16) {
        vec8 acc[4][2] = {{zero, zero}, {zero, zero}, {zero, zero}, {zero, zero}};
        int64_t i = 0;
        for (; i + 4 <= in; i += 4)
            for (int q = 0; q < 4; q++) {
                const float *wi = w + (i + q) * out + o;
                acc[q][0] += x[i + q] * load8(wi);
                acc[q][1] += x[i + q] * load8(wi + 8);
            }
        for (; i < in; i++) {
            acc[0][0] += x[i] * load8(w + i * out + o);
            acc[0][1] += x[i] * load8(w + i * out + o + 8);
        }
        vec8 y0 = (acc[0][0] + acc[1][0]) + (acc[2][0] + acc[3][0]);
        vec8 y1 = (acc[0][1] + acc[1][1]) + (acc[2][1] + acc[3][1]);
        if (l->bias) {
            y0 += load8(l->bias + o);
            y1 += load8(l->bias + o + 8);
        }
        store8(y + o, y0);
        store8(y + o + 8, y1);
    }
}

/* y (rows, out) = x (rows, in) @ weight^T + bias. Rows in blocks of 6 (a prompt, a refill)
 * accumulate 6 x 16 outputs in registers over all of `in`, from weight_t; each row left (a
 * decoding step's single row above all) goes through linear_row, or, when out is not a
 * multiple of 16 (a vocabulary's head), a dot product per output over the file's rows. */
static void linear(const Linear *l, const float *restrict x, int64_t rows, float *restrict y)
{
    const int64_t in = l->in, out = l->out;
    const int64_t blocked = out % 16 == 0 ? rows / 6 * 6 : 0;
    const float *w = l->weight_t;
    for (int64_t o = 0; blocked > 0 && o < out; o += 16) {  /* 16 columns of w stay in L1 */
        for (int64_t r0 = 0; r0 < blocked; r0 += 6) {
            const float *xr = x + r0 * in;
            const vec8 zero = {0};
            vec8 acc[6][2] = {{zero, zero}, {zero, zero}, {zero, zero},
                              {zero, zero}, {zero, zero}, {zero, zero}};
            for (int64_t i = 0; i < in; i++) {
                const vec8 w0 = load8(w + i * out + o), w1 = load8(w + i * out + o + 8);
                for (int r = 0; r < 6; r++) {
                    const float xi = xr[r * in + i];
                    acc[r][0] += xi * w0;
                    acc[r][1] += xi * w1;
                }
            }
            const vec8 b0 = l->bias ? load8(l->bias + o) : zero;
            const vec8 b1 = l->bias ? load8(l->bias + o + 8) : zero;
            for (int r = 0; r < 6; r++) {
                store8(y + (r0 + r) * out + o, acc[r][0] + b0);
                store8(y + (r0 + r) * out + o + 8, acc[r][1] + b1);
            }
        }
    }
    for (int64_t r = blocked; r < rows; r++) {
        if (out % 16 == 0) {
            linear_row(l, x + r * in, y + r * out);
            continue;
        }
        for (int64_t o = 0; o < out; o++)
            y[r * out + o] = dot(l->weight + o * in, x + r * in, in) + (l->bias ? l->bias[o] : 0.0f);
    }
}

/* make_norm: LayerNorm (centre, scale, optional bias) or RMSNorm (scale only), over C. */
static void norm(const Norm *n, const float *x, int64_t C, float *out)
{
    float mean = 0.0f, squares = 0.0f;
    if (n->layernorm) {
        for (int64_t i = 0; i < C; i++)
            mean += x[i];
        mean /= (float)C;
    }
    for (int64_t i = 0; i < C; i++)
        squares += (x[i] - mean) * (x[i] - mean);
    const float scale = 1.0f / sqrtf(squares / (float)C + EPS);
    for (int64_t i = 0; i < C; i++)
        out[i] = (x[i] - mean) * scale * n->weight[i] + (n->bias ? n->bias[i] : 0.0f);
}

/* rotary_tables: pair i turns at frequency 1 / base^(2i/D); cos and sin (context, D/2). */
static void rotary_tables(int64_t context, int64_t D, float *cos_out, float *sin_out)
{
    for (int64_t p = 0; p < context; p++)
        for (int64_t i = 0; i < D / 2; i++) {
            const float inv_freq = 1.0f / powf(ROPE_BASE, (float)(2 * i) / (float)D);
            const float angle = (float)p * inv_freq;
            cos_out[p * (D / 2) + i] = cosf(angle);
            sin_out[p * (D / 2) + i] = sinf(angle);
        }
}

/* apply_rotary: turn channel pairs (i, i + D/2) of each head of x (heads * D) by position p. */
static void apply_rotary(const Model *m, float *x, int64_t heads, int64_t p)
{
    const int64_t half = m->D / 2;
    const float *cos = m->rope_cos + p * half, *sin = m->rope_sin + p * half;
    for (int64_t h = 0; h < heads; h++) {
        float *x1 = x + h * m->D, *x2 = x1 + half;
        for (int64_t i = 0; i < half; i++) {
            const float a = x1[i], b = x2[i];
            x1[i] = a * cos[i] - b * sin[i];
            x2[i] = a * sin[i] + b * cos[i];
        }
    }
}

/* sinusoidal_table: sin on even channels, cos on odd ones (Vaswani et al. 2017). */
static void sinusoidal_table(int64_t context, int64_t C, float *table)
{
    for (int64_t p = 0; p < context; p++)
        for (int64_t i = 0; i < C; i += 2) {
            const float angle = (float)p * powf(10000.0f, -(float)i / (float)C);
            table[p * C + i] = sinf(angle);
            if (i + 1 < C)
                table[p * C + i + 1] = cosf(angle);
        }
}

/* One query head over positions first..p of the cache: the scores q . k_j * scale, their
 * softmax, and the sum of the values it weights, into out (D). The scores of 32 positions at a
 * time are summed over D in registers (four independent chains); the values, 8 channels at a
 * time, in four interleaved sums over the positions, divided by the softmax's total once. */
static void attend_head(const float *q, float scale, const float *keys, const float *values,
                        int64_t D, int64_t ctx, int64_t first, int64_t p, float *scores, float *out)
{
    int64_t j = first;
    for (; j + 32 <= p + 1; j += 32) {
        vec8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int64_t d = 0; d < D; d++) {
            const float *k = keys + d * ctx + j;
            a0 += q[d] * load8(k);
            a1 += q[d] * load8(k + 8);
            a2 += q[d] * load8(k + 16);
            a3 += q[d] * load8(k + 24);
        }
        store8(scores + j, a0 * scale), store8(scores + j + 8, a1 * scale);
        store8(scores + j + 16, a2 * scale), store8(scores + j + 24, a3 * scale);
    }
    for (; j + 8 <= p + 1; j += 8) {
        vec8 a = {0};
        for (int64_t d = 0; d < D; d++)
            a += q[d] * load8(keys + d * ctx + j);
        store8(scores + j, a * scale);
    }
    for (; j <= p; j++) {
        float a = 0.0f;
        for (int64_t d = 0; d < D; d++)
            a += q[d] * keys[d * ctx + j];
        scores[j] = a * scale;
    }
    float top = -INFINITY;
    j = first;
    if (j + 8 <= p + 1) {
        vec8 tops = load8(scores + j);
        for (j += 8; j + 8 <= p + 1; j += 8) {
            const vec8 s = load8(scores + j);
            tops = select8(s > tops, s, tops);
        }
        for (int i = 0; i < 8; i++)
            top = tops[i] > top ? tops[i] : top;
    }
    for (; j <= p; j++)
        top = scores[j] > top ? scores[j] : top;
    vec8 totals = {0};
    for (j = first; j + 8 <= p + 1; j += 8) {  /* softmax: e^(score - top), eight at a time */
        const vec8 e = exp8(load8(scores + j) - top);
        store8(scores + j, e);
        totals += e;
    }
    float total = sum8(totals);
    for (; j <= p; j++) {
        scores[j] = expf(scores[j] - top);
        total += scores[j];
    }
    const float inv = 1.0f / total;
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
        vec8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        const float *v = values + d;
        for (j = first; j + 4 <= p + 1; j += 4) {
            a0 += scores[j] * load8(v + j * D);
            a1 += scores[j + 1] * load8(v + (j + 1) * D);
            a2 += scores[j + 2] * load8(v + (j + 2) * D);
            a3 += scores[j + 3] * load8(v + (j + 3) * D);
        }
        for (; j <= p; j++)
            a0 += scores[j] * load8(v + j * D);
        store8(out + d, ((a0 + a1) + (a2 + a3)) * inv);
    }
    for (; d < D; d++) {
        float a = 0.0f;
        for (j = first; j <= p; j++)
            a += scores[j] * values[j * D + d];
        out[d] = a * inv;
    }
}

/* CausalSelfAttention, for one row at position p of sample b: q, k, v from its qkv row, RoPE,
 * the key and value written into the cache, and the attention of the H query heads over the
 * positions it sees (all up to p, or the last W in a local layer; query head h reads kv head
 * h / (H / K), as SDPA's enable_gqa does) into out (H * D), before the output projection. */
static void attend(const Model *m, const Block *blk, int64_t b, int64_t p, float *qkv,
                   float *scores, float *out)
{
    const int64_t H = m->H, K = m->K, D = m->D, ctx = m->context, group = H / K;
    float *q = qkv, *k = qkv + H * D, *v = k + K * D;
    if (m->rope_cos) {
        apply_rotary(m, q, H, p);
        apply_rotary(m, k, K, p);
    }
    for (int64_t kh = 0; kh < K; kh++) {
        float *keys = blk->keys + (b * K + kh) * D * ctx;      /* (D, ctx) */
        float *values = blk->values + (b * K + kh) * ctx * D;  /* (ctx, D) */
        for (int64_t d = 0; d < D; d++) {
            keys[d * ctx + p] = k[kh * D + d];
            values[p * D + d] = v[kh * D + d];
        }
    }
    const int64_t first = blk->window > 0 && p + 1 > blk->window ? p + 1 - blk->window : 0;
    const float scale = 1.0f / sqrtf((float)D);
    for (int64_t h = 0; h < H; h++) {
        const float *keys = blk->keys + (b * K + h / group) * D * ctx;
        const float *values = blk->values + (b * K + h / group) * ctx * D;
        attend_head(q + h * D, scale, keys, values, D, ctx, first, p, scores, out + h * D);
    }
}

/* MLP's nonlinearity over one row: gelu (exact erf) and relu2 widen to hidden; swiglu gates
 * the second half of h with silu of the first. Eight at a time where erf and exp are needed. */
static void activate(const Model *m, const float *h, float *out)
{
    const int64_t n = m->hidden;
    int64_t i = 0;
    if (m->mlp == GELU)
        for (; i + 8 <= n; i += 8) {
            const vec8 v = load8(h + i);
            store8(out + i, 0.5f * v * (1.0f + erf8(v * 0.70710678118654752f)));
        }
    else if (m->mlp == SWIGLU)
        for (; i + 8 <= n; i += 8) {
            const vec8 v = load8(h + i);
            store8(out + i, v / (1.0f + exp8(-v)) * load8(h + n + i));
        }
    for (; i < n; i++) {
        const float v = h[i];
        if (m->mlp == GELU)
            out[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        else if (m->mlp == RELU2)
            out[i] = v > 0.0f ? v * v : 0.0f;
        else
            out[i] = v / (1.0f + expf(-v)) * h[n + i];
    }
}

/* Block: attention (positions talk to each other), then the MLP (each position alone), with
 * the norms before each (pre-norm) or after each residual addition (post-norm). `rows` of x
 * (rows, C) are updated in place; in the last layer only the last position of each sample goes
 * on past attention (its keys and values are all the cache needs), and rows becomes B. */
static void block(const Model *m, const Block *blk, float *x, int64_t *rows, int64_t batch,
                  int64_t steps, int last, float *work)
{
    const int64_t C = m->C, n = *rows;
    float *xn = work, *att = xn + n * C, *tmp = att + n * C, *qkv = tmp + n * C;
    float *h = qkv + n * blk->qkv.out, *act = h + n * blk->fc.out, *scores = act + n * m->hidden;
    for (int64_t r = 0; r < n; r++)
        if (m->pre_norm)
            norm(&blk->norm1, x + r * C, C, xn + r * C);
    linear(&blk->qkv, m->pre_norm ? xn : x, n, qkv);
    for (int64_t r = 0; r < n; r++) {  /* causal: each row sees the keys written before it */
        const int64_t b = r / steps, t = r % steps;
        /* in the last layer a row before the last position only writes its key and value */
        float *into = !last ? att + r * C : t == steps - 1 ? att + b * C : tmp;
        attend(m, blk, b, m->pos + t, qkv + r * blk->qkv.out, scores, into);
    }
    if (last && steps > 1) {
        for (int64_t b = 0; b < batch; b++)
            memmove(x + b * C, x + (b * steps + steps - 1) * C, (size_t)C * sizeof(float));
        *rows = batch;
    }
    const int64_t k = *rows;
    linear(&blk->attn_proj, att, k, tmp);
    for (int64_t j = 0; j < k * C; j++)
        x[j] += tmp[j];
    for (int64_t r = 0; r < k; r++) {
        if (m->pre_norm)
            norm(&blk->norm2, x + r * C, C, xn + r * C);  /* x + mlp(norm2(x)) follows */
        else
            norm(&blk->norm1, x + r * C, C, x + r * C);   /* x = norm1(x + attn(x)) */
    }
    linear(&blk->fc, m->pre_norm ? xn : x, k, h);
    for (int64_t r = 0; r < k; r++)
        activate(m, h + r * blk->fc.out, act + r * m->hidden);
    linear(&blk->mlp_proj, act, k, tmp);
    for (int64_t j = 0; j < k * C; j++)
        x[j] += tmp[j];
    if (!m->pre_norm)
        for (int64_t r = 0; r < k; r++)
            norm(&blk->norm2, x + r * C, C, x + r * C);
}

/* Transformer.forward: tokens (B, T) continue the sequences the cache holds; the logits
 * (B, V) of the last position. 0, or -1 for a token outside the vocabulary, -2 past the
 * context, -3 for a batch the cache was not made for, -4 out of memory (nothing done). */
int64_t lm_forward(Model *m, const int64_t *tokens, int64_t batch, int64_t steps, float *logits)
{
    const int64_t C = m->C, n = batch * steps;
    if (batch != m->batch)
        return -3;
    if (m->pos + steps > m->context)
        return -2;
    for (int64_t r = 0; r < n; r++)
        if (tokens[r] < 0 || tokens[r] >= m->V)
            return -1;
    if (n > m->scratch_rows) {
        const int64_t widest = m->blocks[0].qkv.out + m->blocks[0].fc.out + m->hidden;
        float *grown = realloc(m->scratch, sizeof(float) * (size_t)(n * (5 * C + widest) + m->context));
        if (!grown)
            return -4;
        m->scratch = grown;
        m->scratch_rows = n;
    }
    float *x = m->scratch, *work = x + n * C;
    for (int64_t r = 0; r < n; r++) {  /* token embeddings, plus absolute positions */
        const int64_t p = m->pos + r % steps;
        for (int64_t c = 0; c < C; c++) {
            float e = m->wte[tokens[r] * C + c];
            if (m->wpe)
                e += m->wpe[p * C + c];
            else if (m->sinusoid)
                e += m->sinusoid[p * C + c];
            x[r * C + c] = e;
        }
    }
    int64_t rows = n;
    for (int64_t i = 0; i < m->L; i++)
        block(m, &m->blocks[i], x, &rows, batch, steps, i == m->L - 1, work);
    m->pos += steps;
    if (m->pre_norm)
        for (int64_t r = 0; r < batch; r++)
            norm(&m->norm, x + r * C, C, x + r * C);
    linear(&m->head, x, batch, logits);
    return 0;
}

/* An empty cache for `batch` samples: positions restart at 0. 0, or -4 out of memory. */
int64_t lm_reset(Model *m, int64_t batch)
{
    if (batch != m->batch) {
        const size_t size = sizeof(float) * (size_t)(batch * m->K * m->D * m->context);
        for (int64_t i = 0; i < m->L; i++) {
            free(m->blocks[i].keys);
            free(m->blocks[i].values);
            m->blocks[i].keys = malloc(size);
            m->blocks[i].values = malloc(size);
            if (!m->blocks[i].keys || !m->blocks[i].values) {
                m->batch = 0;
                return -4;
            }
        }
        m->batch = batch;
    }
    m->pos = 0;
    return 0;
}

/* -- opening: every weight found by name and checked for its shape -------------------------- */

typedef struct {
    const Tensor *tensors;
    int64_t count;
    char *error;
    int64_t error_size;
    int failed;
} Finder;

/* The tensor `name` of shape (d0) or (d0, d1) when d1 > 0; NULL and an error if it is
 * missing (unless optional) or has another shape. */
static const float *find(Finder *f, const char *name, int64_t d0, int64_t d1, int optional)
{
    if (f->failed)
        return NULL;
    for (int64_t i = 0; i < f->count; i++) {
        const Tensor *t = &f->tensors[i];
        if (strcmp(t->name, name) != 0)
            continue;
        const int64_t rank = d1 > 0 ? 2 : 1;
        if (t->rank != rank || t->shape[0] != d0 || (rank == 2 && t->shape[1] != d1)) {
            snprintf(f->error, (size_t)f->error_size, "%s is not of the shape its config needs",
                     name);
            f->failed = 1;
            return NULL;
        }
        return t->data;
    }
    if (!optional) {
        snprintf(f->error, (size_t)f->error_size, "the weights lack %s", name);
        f->failed = 1;
    }
    return NULL;
}

static const float *find_layer(Finder *f, int64_t layer, const char *what, int64_t d0,
                               int64_t d1)
{
    char name[128];
    snprintf(name, sizeof name, "blocks.%lld.%s", (long long)layer, what);
    return find(f, name, d0, d1, 0);
}

static int transpose(Linear *l)  /* weight_t (in, out) from weight (out, in) */
{
    l->weight_t = malloc(sizeof(float) * (size_t)(l->in * l->out));
    if (!l->weight_t)
        return 0;
    for (int64_t o = 0; o < l->out; o++)
        for (int64_t i = 0; i < l->in; i++)
            l->weight_t[i * l->out + o] = l->weight[o * l->in + i];
    return 1;
}

static Linear open_linear(Finder *f, int64_t layer, const char *name, int64_t out, int64_t in,
                          int bias)
{
    char what[64];
    Linear l = {0};
    snprintf(what, sizeof what, "%s.weight", name);
    l.weight = find_layer(f, layer, what, out, in);
    snprintf(what, sizeof what, "%s.bias", name);
    l.bias = bias ? find_layer(f, layer, what, out, 0) : NULL;
    l.in = in, l.out = out;
    return l;
}

void lm_close(Model *m);

static int choose(const char *value, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (strcmp(value, names[i]) == 0)
            return i;
    return -1;
}

/* The model of `cfg` over `tensors`, or NULL and why in `error` (the binding then runs torch). */
Model *lm_open(const Config *cfg, const Tensor *tensors, int64_t count, char *error,
               int64_t error_size)
{
    static const char *const pos_names[] = {"learned", "sinusoidal", "rope", "none"};
    static const char *const mlp_names[] = {"gelu", "relu2", "swiglu"};
    const int pos = choose(cfg->pos, pos_names, 4), mlp = choose(cfg->mlp, mlp_names, 3);
    const int layernorm = strcmp(cfg->norm, "layernorm") == 0;
    if (pos < 0 || mlp < 0 || (!layernorm && strcmp(cfg->norm, "rmsnorm") != 0)) {
        snprintf(error, (size_t)error_size, "decode.c knows no --pos %s, --mlp %s or --norm %s",
                 cfg->pos, cfg->mlp, cfg->norm);
        return NULL;
    }
    Model *m = calloc(1, sizeof(Model));
    if (!m)
        return NULL;
    Finder f = {tensors, count, error, error_size, 0};
    const int64_t C = cfg->width, H = cfg->heads, K = cfg->kv_heads, D = C / H, V = cfg->vocab_size;
    m->V = V, m->L = cfg->layers, m->C = C, m->H = H, m->K = K, m->D = D;
    m->context = cfg->context, m->mlp = mlp;
    m->hidden = mlp == SWIGLU ? 8 * ((C + 2) / 3) : 4 * C;
    m->pre_norm = strcmp(cfg->norm_placement, "pre") == 0;
    const int norm_bias = layernorm && cfg->bias;
    const int64_t fc_out = mlp == SWIGLU ? 2 * m->hidden : m->hidden;
    const int64_t pattern = (int64_t)strlen(cfg->window_pattern);
    m->wte = find(&f, "wte.weight", V, C, 0);
    m->wpe = pos == 0 ? find(&f, "wpe.weight", cfg->context, C, 0) : NULL;
    m->blocks = calloc((size_t)m->L, sizeof(Block));
    for (int64_t i = 0; m->blocks && i < m->L; i++) {
        Block *b = &m->blocks[i];
        b->norm1 = (Norm){find_layer(&f, i, "norm1.weight", C, 0),
                          norm_bias ? find_layer(&f, i, "norm1.bias", C, 0) : NULL, layernorm};
        b->norm2 = (Norm){find_layer(&f, i, "norm2.weight", C, 0),
                          norm_bias ? find_layer(&f, i, "norm2.bias", C, 0) : NULL, layernorm};
        b->qkv = open_linear(&f, i, "attn.qkv", C + 2 * K * D, C, (int)cfg->bias);
        b->attn_proj = open_linear(&f, i, "attn.proj", C, C, (int)cfg->bias);
        b->fc = open_linear(&f, i, "mlp.fc", fc_out, C, (int)cfg->bias);
        b->mlp_proj = open_linear(&f, i, "mlp.proj", C, m->hidden, (int)cfg->bias);
        const char letter = cfg->window_pattern[i % pattern];
        b->window = cfg->window > 0 && (letter == 'S' || letter == 's') ? cfg->window : 0;
    }
    if (m->pre_norm)
        m->norm = (Norm){find(&f, "norm.weight", C, 0, 0),
                         norm_bias ? find(&f, "norm.bias", C, 0, 0) : NULL, layernorm};
    const float *head = find(&f, "head.weight", V, C, (int)cfg->tie);  /* tied: the embedding */
    m->head = (Linear){head ? head : m->wte, NULL, NULL, C, V};
    if (f.failed || !m->blocks) {
        lm_close(m);
        return NULL;
    }
    int ok = transpose(&m->head);
    for (int64_t i = 0; i < m->L; i++) {
        Block *b = &m->blocks[i];
        ok = ok && transpose(&b->qkv) && transpose(&b->attn_proj) && transpose(&b->fc)
             && transpose(&b->mlp_proj);
    }
    if (pos == 1) {
        m->sinusoid = malloc(sizeof(float) * (size_t)(cfg->context * C));
        ok = ok && m->sinusoid;
        if (ok)
            sinusoidal_table(cfg->context, C, m->sinusoid);
    } else if (pos == 2) {
        m->rope_cos = malloc(sizeof(float) * (size_t)(cfg->context * D / 2));
        m->rope_sin = malloc(sizeof(float) * (size_t)(cfg->context * D / 2));
        ok = ok && m->rope_cos && m->rope_sin;
        if (ok)
            rotary_tables(cfg->context, D, m->rope_cos, m->rope_sin);
    }
    if (!ok) {
        snprintf(error, (size_t)error_size, "out of memory");
        lm_close(m);
        return NULL;
    }
    return m;
}

void lm_close(Model *m)
{
    if (!m)
        return;
    for (int64_t i = 0; m->blocks && i < m->L; i++) {
        Block *b = &m->blocks[i];
        free(b->qkv.weight_t), free(b->attn_proj.weight_t), free(b->fc.weight_t);
        free(b->mlp_proj.weight_t), free(b->keys), free(b->values);
    }
    free(m->blocks), free(m->head.weight_t), free(m->sinusoid), free(m->rope_cos);
    free(m->rope_sin), free(m->scratch), free(m);
}
