#include "model/ref_model.h"

#include "numerics/cast_ref.h"

namespace fp8lm::ref {
namespace {
constexpr size_t kPerBlock = 12;

Vec add_vec(const Vec& a, const Vec& b) {
  Vec out(a.size());
  for (size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
  return out;
}

// x as an LM head operand: BF16(FP32(x)) with the BF16 head, else x.
double head_operand(const RefModel& m, double x) {
  if (!m.bf16_head) return x;
  return decode_ref(encode_ref(static_cast<float>(x), kBF16Format), kBF16Format);
}

// Everything the backward pass needs from one forward pass.
struct Trace {
  std::vector<Vec> resid, ln1, qkv, att, mid, ln2, fch, gel;
  Vec lnf, logits;
};

}  // namespace

RefModel::RefModel(const GptParams& params) : cfg(params.config()) {
  const auto& specs = params.specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    size_t n = specs[i].numel();
    if (i == 0) n = static_cast<size_t>(cfg.vocab_size) * static_cast<size_t>(cfg.n_embd);
    p.emplace_back(params.at(i), params.at(i) + n);
  }
}

static Trace run_forward(const RefModel& m, const std::vector<int32_t>& tokens, size_t B,
                         size_t T) {
  const size_t C = static_cast<size_t>(m.cfg.n_embd), BT = B * T, L = static_cast<size_t>(m.cfg.n_layer);
  const size_t NH = static_cast<size_t>(m.cfg.n_head), V = static_cast<size_t>(m.cfg.vocab_size);
  Trace tr;
  Vec x(BT * C);
  for (size_t i = 0; i < BT; ++i)
    for (size_t c = 0; c < C; ++c)
      x[i * C + c] = m.p[0][static_cast<size_t>(tokens[i]) * C + c] + m.p[1][(i % T) * C + c];
  tr.resid.push_back(x);
  for (size_t l = 0; l < L; ++l) {
    const auto& q = [&](size_t k) -> const Vec& { return m.p[2 + l * kPerBlock + k]; };
    Vec y;
    layernorm_fwd(y, tr.resid[l], q(0), q(1), BT, C);
    tr.ln1.push_back(y);
    linear_fwd(y, tr.ln1[l], q(2), q(3).data(), BT, C, 3 * C);
    tr.qkv.push_back(y);
    attention_fwd(y, tr.qkv[l], B, T, C, NH);
    tr.att.push_back(y);
    linear_fwd(y, tr.att[l], q(4), q(5).data(), BT, C, C);
    tr.mid.push_back(add_vec(tr.resid[l], y));
    layernorm_fwd(y, tr.mid[l], q(6), q(7), BT, C);
    tr.ln2.push_back(y);
    linear_fwd(y, tr.ln2[l], q(8), q(9).data(), BT, C, 4 * C);
    tr.fch.push_back(y);
    for (double& v : y) v = gelu(v);
    tr.gel.push_back(y);
    linear_fwd(y, tr.gel[l], q(10), q(11).data(), BT, 4 * C, C);
    tr.resid.push_back(add_vec(tr.mid[l], y));
  }
  const size_t nf = m.p.size() - 2;
  layernorm_fwd(tr.lnf, tr.resid[L], m.p[nf], m.p[nf + 1], BT, C);
  tr.logits.assign(BT * V, 0);
  for (size_t i = 0; i < BT; ++i)
    for (size_t v = 0; v < V; ++v) {
      double s = 0;
      for (size_t c = 0; c < C; ++c)
        s += head_operand(m, tr.lnf[i * C + c]) * head_operand(m, m.p[0][v * C + c]);
      tr.logits[i * V + v] = s;
    }
  return tr;
}

Vec RefModel::logits(const std::vector<int32_t>& tokens, size_t B, size_t T) const {
  return run_forward(*this, tokens, B, T).logits;
}

double RefModel::loss(const std::vector<int32_t>& tokens, const std::vector<int32_t>& targets,
                      size_t B, size_t T, std::vector<Vec>* grads, const Vec* weights) const {
  const size_t C = static_cast<size_t>(cfg.n_embd), BT = B * T, L = static_cast<size_t>(cfg.n_layer);
  const size_t NH = static_cast<size_t>(cfg.n_head), V = static_cast<size_t>(cfg.vocab_size);
  const Trace tr = run_forward(*this, tokens, B, T);
  Vec dlogits;
  const double loss = cross_entropy(tr.logits, targets, BT, V, grads ? &dlogits : nullptr, weights);
  if (!grads) return loss;
  std::vector<Vec>& g = *grads;
  g.clear();
  for (const Vec& v : p) g.emplace_back(v.size(), 0.0);
  // LM head (tied): lnf · wteᵀ.
  Vec dlnf(BT * C, 0);
  for (size_t i = 0; i < BT; ++i)
    for (size_t v = 0; v < V; ++v) {
      const double d = head_operand(*this, dlogits[i * V + v]);
      for (size_t c = 0; c < C; ++c) {
        dlnf[i * C + c] += d * head_operand(*this, p[0][v * C + c]);
        g[0][v * C + c] += d * head_operand(*this, tr.lnf[i * C + c]);
      }
    }
  const size_t nf = p.size() - 2;
  Vec dx(BT * C, 0);
  layernorm_bwd(dx, g[nf], g[nf + 1], dlnf, tr.resid[L], p[nf], BT, C);
  for (size_t l = L; l-- > 0;) {
    const size_t s = 2 + l * kPerBlock;
    // resid[l+1] = mid + fcproj(gelu(fc(ln2(mid))))
    Vec dgel(BT * 4 * C, 0), dln2(BT * C, 0), datt(BT * C, 0), dqkv(BT * 3 * C, 0),
        dln1(BT * C, 0);
    linear_bwd(dgel, g[s + 10], g[s + 11].data(), dx, tr.gel[l], p[s + 10], BT, 4 * C, C);
    Vec dfch(dgel.size());
    for (size_t i = 0; i < dfch.size(); ++i) dfch[i] = dgel[i] * gelu_grad(tr.fch[l][i]);
    linear_bwd(dln2, g[s + 8], g[s + 9].data(), dfch, tr.ln2[l], p[s + 8], BT, C, 4 * C);
    layernorm_bwd(dx, g[s + 6], g[s + 7], dln2, tr.mid[l], p[s + 6], BT, C);  // dx: d mid
    linear_bwd(datt, g[s + 4], g[s + 5].data(), dx, tr.att[l], p[s + 4], BT, C, C);
    attention_bwd(dqkv, datt, tr.qkv[l], B, T, C, NH);
    linear_bwd(dln1, g[s + 2], g[s + 3].data(), dqkv, tr.ln1[l], p[s + 2], BT, C, 3 * C);
    layernorm_bwd(dx, g[s], g[s + 1], dln1, tr.resid[l], p[s], BT, C);  // dx: d resid[l]
  }
  for (size_t i = 0; i < BT; ++i)
    for (size_t c = 0; c < C; ++c) {
      g[0][static_cast<size_t>(tokens[i]) * C + c] += dx[i * C + c];
      g[1][(i % T) * C + c] += dx[i * C + c];
    }
  return loss;
}

}  // namespace fp8lm::ref
