/* One decoding step of an lmcli transformer, in C.
 *
 * Why C: a step of a small model is ~200 tiny array operations, and numpy spends ~1.5 us of
 * dispatch on each where the arithmetic takes a fraction of that; here the whole step is one
 * call. This file is compiled on first use by lmcli/sampling/kernel.py, which falls back to
 * numpy without a C compiler. It computes what NumpyTransformer.forward computes for one new
 * position (T = 1) from the same arrays: the weights as numpy_engine.py arranges them (W^T
 * stored (in, out); pre-norm gains folded into the next matrix; queries pre-scaled by
 * 1/sqrt(D); RoPE as q * cos + q_swapped * sin) and the same KV cache, so that a numpy prompt
 * or refill and C steps share it. tests/sampling/test_kernel.py holds the two to each other.
 *
 * Shapes: B rows, C width, H query heads, K kv heads, G = H / K, D head size, S cached positions
 * (ctx at most), V vocabulary. kernel.py checks every array's shape before passing a pointer.
 */
#include <math.h>
#include <stdint.h>

enum { NORM_LAYER = 0, NORM_RMS = 1 };
enum { MLP_GELU = 0, MLP_RELU2 = 1, MLP_SWIGLU = 2 };

typedef struct {
    const float *qkv_w, *qkv_b;   /* (C, qkv_cols), (qkv_cols) or NULL */
    const float *proj_w, *proj_b; /* (C, C), (C) or NULL */
    const float *fc_w, *fc_b;     /* (C, fc_cols), (fc_cols) or NULL */
    const float *out_w, *out_b;   /* (hidden, C), (C) or NULL */
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b; /* post-norm gains; biases may be NULL */
    int64_t window;               /* a sliding-window layer's width, 0 for a global one */
} Layer;

typedef struct {
    int64_t layers, width, heads, kv_heads, head_dim, context, vocab;
    int64_t qkv_cols, fc_cols, hidden; /* hidden: the MLP's inner width (fc_cols / 2 for swiglu) */
    int64_t norm, pre_norm, mlp;
    const float *wte;                 /* (V, C) */
    const float *positions;           /* (ctx, C) added to the embedding, or NULL */
    const float *rope_cos, *rope_sin; /* (ctx, C + K*D) each, or NULL */
    const float *head_w, *head_b;     /* (C, V), (V) or NULL */
    const Layer *layer;
} Model;

static const float EPS = 1e-5f;

/* y (rows, out) = x (rows, in) @ w (in, out) + b: rows of w stream through once for all rows. */
static void linear(const float *restrict x, int64_t rows, int64_t in, const float *restrict w,
                   const float *restrict b, int64_t out, float *restrict y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++)
            y[r * out + o] = b ? b[o] : 0.0f;
    for (int64_t i = 0; i < in; i++) {
        const float *restrict wi = w + i * out;
        for (int64_t r = 0; r < rows; r++) {
            const float xi = x[r * in + i];
            float *restrict yr = y + r * out;
            for (int64_t o = 0; o < out; o++)
                yr[o] += xi * wi[o];
        }
    }
}

/* out = the norm of x without gain: (x - mean) / rms for LayerNorm, x / rms for RMSNorm; then,
 * if gain is given, * gain + bias (a post-norm block's norms, which have no matrix to fold into). */
static void normalize(const float *x, int64_t n, int64_t kind, const float *gain,
                      const float *bias, float *out)
{
    float mean = 0.0f, squares = 0.0f;
    if (kind == NORM_LAYER) {
        for (int64_t i = 0; i < n; i++)
            mean += x[i];
        mean /= (float)n;
    }
    for (int64_t i = 0; i < n; i++)
        squares += (x[i] - mean) * (x[i] - mean);
    const float scale = 1.0f / sqrtf(squares / (float)n + EPS);
    for (int64_t i = 0; i < n; i++) {
        float y = (x[i] - mean) * scale;
        if (gain)
            y = y * gain[i] + (bias ? bias[i] : 0.0f);
        out[i] = y;
    }
}

static void activate(const Model *m, const float *h, float *out)
{
    const int64_t n = m->hidden;
    for (int64_t i = 0; i < n; i++) {
        const float v = h[i];
        if (m->mlp == MLP_GELU)
            out[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        else if (m->mlp == MLP_RELU2)
            out[i] = v > 0.0f ? v * v : 0.0f;
        else /* swiglu: silu(gate) * up, gate the first half of h */
            out[i] = v / (1.0f + expf(-v)) * h[n + i];
    }
}

/* One row's attention at position pos: write its key and value, read every cached one. */
static void attend(const Model *m, const Layer *l, float *keys, float *values, int64_t row,
                   int64_t pos, const float *qkv, float *rotated, float *scores, float *out)
{
    const int64_t C = m->width, K = m->kv_heads, D = m->head_dim, ctx = m->context;
    const int64_t G = m->heads / K, qk = C + K * D;
    const float *q = qkv, *k = qkv + C, *v = qkv + qk;
    if (m->rope_cos) { /* q and k turned by their position's angles (see numpy_engine._Block) */
        const float *cos = m->rope_cos + pos * qk, *sin = m->rope_sin + pos * qk;
        const float *swapped = qkv + m->qkv_cols - qk;
        for (int64_t j = 0; j < qk; j++)
            rotated[j] = qkv[j] * cos[j] + swapped[j] * sin[j];
        q = rotated;
        k = rotated + C;
    }
    const int64_t first = l->window > 0 && pos + 1 > l->window ? pos + 1 - l->window : 0;
    for (int64_t kh = 0; kh < K; kh++) {
        float *kt = keys + (row * K + kh) * D * ctx; /* (D, ctx): keys stored transposed */
        float *vs = values + (row * K + kh) * ctx * D; /* (ctx, D) */
        for (int64_t d = 0; d < D; d++) {
            kt[d * ctx + pos] = k[kh * D + d];
            vs[pos * D + d] = v[kh * D + d];
        }
        for (int64_t g = 0; g < G; g++) {
            const int64_t h = kh * G + g;
            const float *qh = q + h * D;
            for (int64_t j = first; j <= pos; j++)
                scores[j] = 0.0f;
            for (int64_t d = 0; d < D; d++)
                for (int64_t j = first; j <= pos; j++)
                    scores[j] += qh[d] * kt[d * ctx + j];
            float top = scores[first], total = 0.0f;
            for (int64_t j = first; j <= pos; j++)
                top = scores[j] > top ? scores[j] : top;
            for (int64_t j = first; j <= pos; j++) {
                scores[j] = expf(scores[j] - top);
                total += scores[j];
            }
            float *oh = out + h * D;
            for (int64_t d = 0; d < D; d++)
                oh[d] = 0.0f;
            for (int64_t j = first; j <= pos; j++) {
                const float p = scores[j] / total;
                for (int64_t d = 0; d < D; d++)
                    oh[d] += p * vs[j * D + d];
            }
        }
    }
}

/* The work space one row needs, in floats; kernel.py allocates rows * this. */
int64_t lm_scratch_floats(const Model *m)
{
    const int64_t qk = m->width + m->kv_heads * m->head_dim;
    return 5 * m->width + m->qkv_cols + m->fc_cols + m->hidden + qk + m->context;
}

/* Append tokens (B,) at position pos to every row's cache and write logits (B, V). keys and
 * values hold one cache array per layer, (B, K, D, ctx) and (B, K, ctx, D). */
void lm_step(const Model *m, float *const *keys, float *const *values, const int64_t *tokens,
             int64_t batch, int64_t pos, float *scratch, float *logits)
{
    const int64_t C = m->width, qk = C + m->kv_heads * m->head_dim;
    float *x = scratch;                        /* (B, C) the residual stream */
    float *xn = x + batch * C;                 /* (B, C) its norm */
    float *att = xn + batch * C;               /* (B, C) attention output */
    float *tmp = att + batch * C;              /* (B, C) a block's output */
    float *qkv = tmp + batch * C;              /* (B, qkv_cols) */
    float *fc = qkv + batch * m->qkv_cols;     /* (B, fc_cols) */
    float *act = fc + batch * m->fc_cols;      /* (B, hidden) */
    float *rotated = act + batch * m->hidden;  /* (qk) */
    float *scores = rotated + qk;              /* (ctx) */

    for (int64_t r = 0; r < batch; r++)
        for (int64_t c = 0; c < C; c++)
            x[r * C + c] = m->wte[tokens[r] * C + c] + (m->positions ? m->positions[pos * C + c] : 0.0f);

    for (int64_t i = 0; i < m->layers; i++) {
        const Layer *l = &m->layer[i];
        const float *in = x; /* post-norm: the stream itself goes in */
        if (m->pre_norm) {
            for (int64_t r = 0; r < batch; r++)
                normalize(x + r * C, C, m->norm, 0, 0, xn + r * C);
            in = xn;
        }
        linear(in, batch, C, l->qkv_w, l->qkv_b, m->qkv_cols, qkv);
        for (int64_t r = 0; r < batch; r++)
            attend(m, l, keys[i], values[i], r, pos, qkv + r * m->qkv_cols, rotated, scores,
                   att + r * C);
        linear(att, batch, C, l->proj_w, l->proj_b, C, tmp);
        for (int64_t j = 0; j < batch * C; j++)
            x[j] += tmp[j];
        if (m->pre_norm) {
            for (int64_t r = 0; r < batch; r++)
                normalize(x + r * C, C, m->norm, 0, 0, xn + r * C);
        } else {
            for (int64_t r = 0; r < batch; r++)
                normalize(x + r * C, C, m->norm, l->norm1_w, l->norm1_b, x + r * C);
        }
        linear(m->pre_norm ? xn : x, batch, C, l->fc_w, l->fc_b, m->fc_cols, fc);
        for (int64_t r = 0; r < batch; r++)
            activate(m, fc + r * m->fc_cols, act + r * m->hidden);
        linear(act, batch, m->hidden, l->out_w, l->out_b, C, tmp);
        for (int64_t j = 0; j < batch * C; j++)
            x[j] += tmp[j];
        if (!m->pre_norm)
            for (int64_t r = 0; r < batch; r++)
                normalize(x + r * C, C, m->norm, l->norm2_w, l->norm2_b, x + r * C);
    }
    const float *last = x;
    if (m->pre_norm) { /* the final norm, its gain folded into the head */
        for (int64_t r = 0; r < batch; r++)
            normalize(x + r * C, C, m->norm, 0, 0, xn + r * C);
        last = xn;
    }
    linear(last, batch, C, m->head_w, m->head_b, m->vocab, logits);
}
