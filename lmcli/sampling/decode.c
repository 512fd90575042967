/* An lmcli transformer's forward in C, for generation on the CPU.
 *
 * Why C: a decoding step of a small model is ~200 tiny array operations, and numpy spends
 * ~1.5 us of dispatch on each where the arithmetic takes a fraction of that; here a forward is
 * one call. lmcli/sampling/kernel.py compiles this file on first use and falls back to numpy
 * without a C compiler. It computes what NumpyTransformer.forward computes, from the same
 * arrays: the weights as numpy_engine.py arranges them (W^T stored (in, out); pre-norm gains
 * folded into the next matrix; queries pre-scaled by 1/sqrt(D); RoPE as q * cos + q_swapped *
 * sin) and the same KV cache. tests/sampling/test_kernel.py holds the two to each other.
 *
 * Shapes: B samples, T new positions, C width, H query heads, K kv heads, G = H / K, D head
 * size, ctx the context, V vocabulary. kernel.py checks every array's shape before passing it.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

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

/* y (rows, out) = x (rows, in) @ w (in, out) + b. Blocks of 6 rows x 16 columns accumulate in
 * registers over all of `in` (a prompt or a refill, where this is compute-bound); what is left,
 * a decoding step's single row above all, streams the rows of w once through axpy updates
 * (bound by reading w from memory). */
static void linear(const float *restrict x, int64_t rows, int64_t in, const float *restrict w,
                   const float *restrict b, int64_t out, float *restrict y)
{
    const int64_t blocked = out % 16 == 0 ? rows / 6 * 6 : 0; /* rows done in blocks */
    for (int64_t o = 0; blocked > 0 && o < out; o += 16) {      /* 16 columns of w stay in L1 */
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
            const vec8 bias0 = b ? load8(b + o) : zero, bias1 = b ? load8(b + o + 8) : zero;
            for (int r = 0; r < 6; r++) {
                store8(y + (r0 + r) * out + o, acc[r][0] + bias0);
                store8(y + (r0 + r) * out + o + 8, acc[r][1] + bias1);
            }
        }
    }
    const int64_t r0 = blocked;
    for (int64_t r = r0; r < rows; r++)
        for (int64_t o = 0; o < out; o++)
            y[r * out + o] = b ? b[o] : 0.0f;
    int64_t i = 0;
    for (; i + 4 <= in; i += 4) { /* four rows of w per pass: fewer loads and stores of y */
        const float *restrict w0 = w + i * out, *restrict w1 = w0 + out;
        const float *restrict w2 = w1 + out, *restrict w3 = w2 + out;
        for (int64_t r = r0; r < rows; r++) {
            const float *xr = x + r * in + i;
            const float x0 = xr[0], x1 = xr[1], x2 = xr[2], x3 = xr[3];
            float *restrict yr = y + r * out;
            for (int64_t o = 0; o < out; o++)
                yr[o] += x0 * w0[o] + x1 * w1[o] + x2 * w2[o] + x3 * w3[o];
        }
    }
    for (; i < in; i++) {
        const float *restrict wi = w + i * out;
        for (int64_t r = r0; r < rows; r++) {
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

/* Write the key and value of one row's position p (B index b) into the cache; the query to use,
 * which RoPE turns into `rotated`. */
static const float *store(const Model *m, float *keys, float *values, int64_t b, int64_t p,
                          const float *qkv, float *rotated)
{
    const int64_t C = m->width, K = m->kv_heads, D = m->head_dim, ctx = m->context;
    const int64_t qk = C + K * D;
    const float *q = qkv, *k = qkv + C, *v = qkv + qk;
    if (m->rope_cos) { /* q and k turned by their position's angles (see numpy_engine._Block) */
        const float *cos = m->rope_cos + p * qk, *sin = m->rope_sin + p * qk;
        const float *swapped = qkv + m->qkv_cols - qk;
        for (int64_t j = 0; j < qk; j++)
            rotated[j] = qkv[j] * cos[j] + swapped[j] * sin[j];
        q = rotated;
        k = rotated + C;
    }
    for (int64_t kh = 0; kh < K; kh++) {
        float *kt = keys + (b * K + kh) * D * ctx;     /* (D, ctx): keys stored transposed */
        float *vs = values + (b * K + kh) * ctx * D;   /* (ctx, D) */
        for (int64_t d = 0; d < D; d++) {
            kt[d * ctx + p] = k[kh * D + d];
            vs[p * D + d] = v[kh * D + d];
        }
    }
    return q;
}

/* Attention out (H*D) of query q at position p of row b over the cached positions it sees:
 * all up to p, or the last `window` of them in a sliding-window layer. */
static void attend(const Model *m, const Layer *l, const float *keys, const float *values,
                   int64_t b, int64_t p, const float *q, float *scores, float *out)
{
    const int64_t K = m->kv_heads, D = m->head_dim, ctx = m->context, G = m->heads / K;
    const int64_t first = l->window > 0 && p + 1 > l->window ? p + 1 - l->window : 0;
    for (int64_t kh = 0; kh < K; kh++) {
        const float *kt = keys + (b * K + kh) * D * ctx;
        const float *vs = values + (b * K + kh) * ctx * D;
        for (int64_t g = 0; g < G; g++) { /* the query heads that share this kv head */
            const int64_t h = kh * G + g;
            const float *qh = q + h * D;
            for (int64_t j = first; j <= p; j++)
                scores[j] = 0.0f;
            for (int64_t d = 0; d < D; d++)
                for (int64_t j = first; j <= p; j++)
                    scores[j] += qh[d] * kt[d * ctx + j];
            float top = scores[first], total = 0.0f;
            for (int64_t j = first; j <= p; j++)
                top = scores[j] > top ? scores[j] : top;
            for (int64_t j = first; j <= p; j++) {
                scores[j] = expf(scores[j] - top);
                total += scores[j];
            }
            float *oh = out + h * D;
            for (int64_t d = 0; d < D; d++)
                oh[d] = 0.0f;
            for (int64_t j = first; j <= p; j++) {
                const float w = scores[j] / total;
                for (int64_t d = 0; d < D; d++)
                    oh[d] += w * vs[j * D + d];
            }
        }
    }
}

/* The work space for n rows (sample x position), in floats; kernel.py allocates it. */
int64_t lm_scratch_floats(const Model *m, int64_t n)
{
    const int64_t qk = m->width + m->kv_heads * m->head_dim;
    return n * (4 * m->width + m->qkv_cols + m->fc_cols + m->hidden) + qk + m->context;
}

/* Add tokens (B, T) at positions pos .. pos + T - 1 to every row's cache and write the logits
 * (B, V) of the last position; 0, or -1 (and nothing done) for a token outside the vocabulary.
 * keys and values hold one cache array per layer, (B, K, D, ctx) and (B, K, ctx, D). Rows of
 * the work arrays are (sample, position), b * T + t. */
int64_t lm_forward(const Model *m, float *const *keys, float *const *values, const int64_t *tokens,
                int64_t batch, int64_t steps, int64_t pos, float *scratch, float *logits)
{
    const int64_t C = m->width, qk = C + m->kv_heads * m->head_dim, n = batch * steps;
    float *x = scratch;                   /* (n, C) the residual stream */
    float *xn = x + n * C;                /* (n, C) its norm */
    float *att = xn + n * C;              /* (n, C) attention output */
    float *tmp = att + n * C;             /* (n, C) a block's output */
    float *qkv = tmp + n * C;             /* (n, qkv_cols) */
    float *fc = qkv + n * m->qkv_cols;    /* (n, fc_cols) */
    float *act = fc + n * m->fc_cols;     /* (n, hidden) */
    float *rotated = act + n * m->hidden; /* (qk) */
    float *scores = rotated + qk;         /* (ctx) */

    for (int64_t r = 0; r < n; r++)
        if (tokens[r] < 0 || tokens[r] >= m->vocab)
            return -1;
    for (int64_t r = 0; r < n; r++) {
        const int64_t p = pos + r % steps;
        for (int64_t c = 0; c < C; c++)
            x[r * C + c] = m->wte[tokens[r] * C + c] + (m->positions ? m->positions[p * C + c] : 0.0f);
    }
    int64_t rows = n; /* rows in flight: all n, then in the last layer the B last positions */
    for (int64_t i = 0; i < m->layers; i++) {
        const Layer *l = &m->layer[i];
        const int last = i == m->layers - 1;
        if (m->pre_norm)
            for (int64_t r = 0; r < rows; r++)
                normalize(x + r * C, C, m->norm, 0, 0, xn + r * C);
        linear(m->pre_norm ? xn : x, rows, C, l->qkv_w, l->qkv_b, m->qkv_cols, qkv);
        for (int64_t r = 0; r < rows; r++) { /* causal: position t sees keys written before it */
            const int64_t b = r / steps, p = pos + r % steps;
            const float *q = store(m, keys[i], values[i], b, p, qkv + r * m->qkv_cols, rotated);
            if (!last)
                attend(m, l, keys[i], values[i], b, p, q, scores, att + r * C);
            else if (p == pos + steps - 1)
                attend(m, l, keys[i], values[i], b, p, q, scores, att + b * C);
        }
        if (last && steps > 1) { /* past its keys and values, only the last position matters */
            for (int64_t b = 0; b < batch; b++)
                for (int64_t c = 0; c < C; c++)
                    x[b * C + c] = x[(b * steps + steps - 1) * C + c];
            rows = batch;
        }
        linear(att, rows, C, l->proj_w, l->proj_b, C, tmp);
        for (int64_t j = 0; j < rows * C; j++)
            x[j] += tmp[j];
        if (m->pre_norm) {
            for (int64_t r = 0; r < rows; r++)
                normalize(x + r * C, C, m->norm, 0, 0, xn + r * C);
        } else {
            for (int64_t r = 0; r < rows; r++)
                normalize(x + r * C, C, m->norm, l->norm1_w, l->norm1_b, x + r * C);
        }
        linear(m->pre_norm ? xn : x, rows, C, l->fc_w, l->fc_b, m->fc_cols, fc);
        for (int64_t r = 0; r < rows; r++)
            activate(m, fc + r * m->fc_cols, act + r * m->hidden);
        linear(act, rows, m->hidden, l->out_w, l->out_b, C, tmp);
        for (int64_t j = 0; j < rows * C; j++)
            x[j] += tmp[j];
        if (!m->pre_norm)
            for (int64_t r = 0; r < rows; r++)
                normalize(x + r * C, C, m->norm, l->norm2_w, l->norm2_b, x + r * C);
    }
    const float *final = x; /* (B, C) */
    if (m->pre_norm) {      /* the final norm, its gain folded into the head */
        for (int64_t r = 0; r < batch; r++)
            normalize(x + r * C, C, m->norm, 0, 0, xn + r * C);
        final = xn;
    }
    linear(final, batch, C, m->head_w, m->head_b, m->vocab, logits);
    return 0;
}
