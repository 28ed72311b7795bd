// Keeps a worker's generation (the configuration a request began under, see worker.h) alive:
// a request in progress pins the generation it began under, a listener the generation its
// view belongs to. The generation goes when its last pin does and it is not the current one.
#pragma once

namespace bulwark {

struct WorkerGeneration;

class GenerationPin {
 public:
  GenerationPin() = default;
  explicit GenerationPin(WorkerGeneration* g) { reset(g); }
  GenerationPin(const GenerationPin&) = delete;
  GenerationPin& operator=(const GenerationPin&) = delete;
  ~GenerationPin() { reset(); }
  void reset(WorkerGeneration* g = nullptr);  // defined in worker.cc
  WorkerGeneration* get() const { return g_; }

 private:
  WorkerGeneration* g_ = nullptr;
};

}  // namespace bulwark
