#pragma once
// Kernel tests run once per instruction-set variant of the kernels (kernels/dispatch.h). A
// variant this CPU (or build) cannot run is reported as skipped, with the reason, never as passed.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "kernels/dispatch.h"

namespace isa_variants {

using kvsqueeze::kernels::Isa;

inline const auto& all() { return kvsqueeze::kernels::kAllIsas; }

// From SetUp(): sends every kernel call to `isa` for the test, or marks the test skipped.
inline void use(Isa isa) {
  namespace k = kvsqueeze::kernels;
  if (!k::isa_built(isa)) GTEST_SKIP() << "kernel variant " << k::isa_name(isa) << " is not compiled into this build";
  if (!k::isa_runs(isa)) GTEST_SKIP() << "this CPU cannot run kernel variant " << k::isa_name(isa);
  k::force_isa(isa);
}

// A test over every variant.
class Test : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override { use(GetParam()); }
  void TearDown() override { kvsqueeze::kernels::reset_isa(); }
};
inline std::string name(const ::testing::TestParamInfo<Isa>& info) { return kvsqueeze::kernels::isa_name(info.param); }

// A test over (P, variant) pairs; the name joins P's name (from `p_name`) and the variant's.
template <class P>
class TestWith : public ::testing::TestWithParam<std::tuple<P, Isa>> {
 protected:
  void SetUp() override { use(std::get<1>(this->GetParam())); }
  void TearDown() override { kvsqueeze::kernels::reset_isa(); }
  const P& param() const { return std::get<0>(this->GetParam()); }
};
template <class P, class F>
auto name_with(F p_name) {
  return [p_name](const ::testing::TestParamInfo<std::tuple<P, Isa>>& info) {
    return std::string(p_name(std::get<0>(info.param))) + "_" + kvsqueeze::kernels::isa_name(std::get<1>(info.param));
  };
}

}  // namespace isa_variants
