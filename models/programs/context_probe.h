// context_probe.h: how a model with unbounded context (a recurrent state) does
// as it reads further into a text, the state carried from window to window.
//
// It reads the ids as `streams` contiguous streams in `seq_len`-token windows,
// exactly as training with data.carry_over does (datasets::BatchOrder::streams),
// starting from zero states and carrying them across windows, in eval mode
// without gradients. For each window it reports the loss and the size of every
// carried state tensor. Two questions it answers (models/FAMILIES.md §2.8):
//  - a model trained on windows from zero states: how far past its training
//    length does its loss hold?
//  - a model trained with carry-over: how long a warm-up do its states need?
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "models/families/language_model.h"

namespace loom::models {

struct WindowReport {
  int64_t window = 0;       // 0, 1, ...: the window's index in each stream
  int64_t tokens_read = 0;  // per stream, before this window: window · seq_len
  double loss = 0;          // mean cross-entropy over the window's B · seq_len targets
  // Root mean square of each carried state tensor after the window (DecodeState::tensors()).
  std::vector<std::pair<std::string, double>> state_rms;
};

// Needs a model whose decoding state is unbounded (context_length() == 0) and ids
// long enough for one window per stream; reads min(windows, windows available).
std::vector<WindowReport> probe_carried_context(LanguageModel& model, const std::vector<int64_t>& ids,
                                                int64_t streams, int64_t seq_len, int64_t windows);

}  // namespace loom::models
