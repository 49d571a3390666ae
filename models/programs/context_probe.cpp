// context_probe.cpp: see context_probe.h.
#include "models/programs/context_probe.h"

#include <cmath>

#include "autodiff/grad_mode.h"
#include "datasets/batcher.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace loom::models {

std::vector<WindowReport> probe_carried_context(LanguageModel& model, const std::vector<int64_t>& ids,
                                                int64_t streams, int64_t seq_len, int64_t windows) {
  LOOM_CHECK(model.context_length() == 0, "probe_carried_context: the ", model.config().family, " model holds ",
             model.context_length(), " positions, so its context is not carried without bound; ",
             "the probe is for models with a recurrent state (family fast_weights)");
  LOOM_CHECK(streams >= 1 && seq_len >= 1 && windows >= 1, "probe_carried_context: streams (", streams,
             "), seq_len (", seq_len, ") and windows (", windows, ") must be positive");
  // The training batcher's stream layout (it checks that every stream holds a window).
  datasets::ShuffledBatcher batches(ids, seq_len, streams, /*seed, unused by streams*/ 0,
                                    datasets::BatchOrder::streams);
  const int64_t count = std::min(windows, batches.batches_per_epoch());

  const Device device = model.parameters().empty() ? Device::cpu : model.parameters().front().device();
  const bool was_training = model.training();
  model.eval();
  NoGradGuard no_grad;
  std::unique_ptr<DecodeState> state = model.start_decoding(streams);
  std::vector<WindowReport> reports;
  for (int64_t w = 0; w < count; ++w) {
    const datasets::Batch batch = batches.next();
    const Tensor logits = model.decode(*state, batch.input.to(device));
    WindowReport r;
    r.window = w;
    r.tokens_read = w * seq_len;
    r.loss = cross_entropy(logits.reshape({-1, logits.size(-1)}), batch.target.to(device).reshape({-1})).item();
    for (const auto& [name, t] : state->tensors()) r.state_rms.emplace_back(name, std::sqrt(mean(t * t).item()));
    reports.push_back(std::move(r));
  }
  if (was_training) model.train();
  return reports;
}

}  // namespace loom::models
