// Bad press settings on the command line: each ends in a non-zero exit (not a signal), exactly
// one line on stderr naming the problem (and the valid choices where there is a list), and
// nothing on stdout.
#include <gtest/gtest.h>

#include "cli_runner.h"

namespace {

std::string generate() { return "generate -m " + test_paths::stories260k() + " -p 'Once upon a time there was a dog.' -n 2 -t 1"; }

}  // namespace

TEST(PressCliErrors, UnknownPressListsTheValidOnes) {
  expect_one_line_error(generate() + " --press nosuch --ratio 0.5", {"unknown press 'nosuch'", "valid: none, adakv", "snapkv"});
  expect_one_line_error(generate() + " --press 'adakv(nosuch)' --ratio 0.5", {"unknown press 'nosuch'"});
  expect_one_line_error(generate() + " --decode-press nosuch", {"unknown press 'nosuch'"});
}

TEST(PressCliErrors, UnknownOptionListsTheValidOnes) {
  expect_one_line_error(generate() + " --press snapkv --ratio 0.5 --press-opt foo=1",
                        {"press 'snapkv' has no option 'foo'", "valid: window_size, kernel_size"});
  expect_one_line_error(generate() + " --press 'snapkv(foo=1)' --ratio 0.5", {"has no option 'foo'", "window_size"});
  expect_one_line_error(generate() + " --press knorm --ratio 0.5 --press-opt foo=1", {"press 'knorm' has no option 'foo'", "valid: none"});
  // A wrapper's message says how to reach an inner press's option.
  expect_one_line_error(generate() + " --press 'adakv(snapkv)' --ratio 0.5 --press-opt window_size=4",
                        {"press 'adakv' has no option 'window_size'", "alpha_safeguard", "NAME.window_size"});
  expect_one_line_error(generate() + " --press snapkv --ratio 0.5 --press-opt window_size", {"KEY=VALUE"});
  expect_one_line_error(generate() + " --press snapkv --ratio 0.5 --press-opt =4", {"KEY=VALUE"});
}

TEST(PressCliErrors, WrongTypes) {
  expect_one_line_error(generate() + " --press snapkv --ratio 0.5 --press-opt window_size=abc",
                        {"option 'window_size' must be an integer, got 'abc'"});
  expect_one_line_error(generate() + " --press snapkv --ratio 0.5 --press-opt window_size=2.5", {"must be an integer"});
  expect_one_line_error(generate() + " --press 'expected_attention(use_vnorm=maybe)' --ratio 0.5", {"'use_vnorm' is a bool"});
  expect_one_line_error(generate() + " --press 'expected_attention(epsilon=nan)' --ratio 0.5", {"'epsilon' must be a number"});
  expect_one_line_error(generate() + " --press 'lagkv(mode=fast)' --ratio 0.5", {"'mode' must be one of kvpress, lagkv, got 'fast'"});
  expect_one_line_error(generate() + " --press 'per_layer(knorm)' --press-opt ratios=0.1,x,0.2", {"'ratios' must be a number, got 'x'"});
}

TEST(PressCliErrors, OutOfRange) {
  expect_one_line_error(generate() + " --press snapkv --ratio 0.5 --press-opt window_size=0", {"'window_size' must be in [1, "});
  expect_one_line_error(generate() + " --press 'adakv(knorm, alpha_safeguard=1.5)' --ratio 0.5", {"'alpha_safeguard' must be in [0, 1]"});
  expect_one_line_error(generate() + " --press 'random(seed=-1)' --ratio 0.5", {"'seed' must be in"});
  expect_one_line_error(generate() + " --press 'think(key_channel_compression_ratio=1)'", {"key_channel_compression_ratio"});
  expect_one_line_error(generate() + " --press 'simlayerkv(n_recent=1)' --ratio 0.5", {"'n_recent' must be in"});
  expect_one_line_error(generate() + " --press 'simlayerkv(n_recent=4, n_last=4)' --ratio 0.5", {"'n_recent' must exceed n_last"});
}

TEST(PressCliErrors, MalformedExpressions) {
  for (const char* bad : {"'adakv('", "'snapkv)'", "'(snapkv'", "'snapkv(window_size=)'", "'snap kv'", "'snapkv(,)'", "'adakv(knorm,)'",
                          "'snapkv(window_size=4 4)'", "'a(b(c(d(e(f(g(h(i(j(k(l(m(n(o(p(q(r(knorm)))))))))))))))))'"})
    expect_one_line_error(generate() + " --ratio 0.5 --press " + bad, {"press"});
  expect_one_line_error(generate() + " --ratio 0.5 --press 'adakv('", {"bad press expression 'adakv(' at character 7", "unexpected end"});
  // Control characters the message would echo are escaped: still one line.
  expect_one_line_error(generate() + " --ratio 0.5 --press \"$(printf 'snap\\nkv')\"", {"snap\\nkv"});
  expect_one_line_error(generate() + " --ratio 0.5 --press snapkv --press-opt \"$(printf 'window_size=4\\n5')\"", {"window_size"});
}

TEST(PressCliErrors, WrapperAndScorerArity) {
  expect_one_line_error(generate() + " --press adakv --ratio 0.5", {"press 'adakv' wraps another press", "adakv(snapkv)"});
  expect_one_line_error(generate() + " --press 'adakv(knorm, snapkv)' --ratio 0.5", {"wraps exactly 1"});
  expect_one_line_error(generate() + " --press composed --ratio 0.5", {"press 'composed' wraps another press"});
  expect_one_line_error(generate() + " --press 'knorm(snapkv)' --ratio 0.5", {"press 'knorm' is a scorer and wraps no other press"});
  // Presses that are not scorers cannot be wrapped as one.
  expect_one_line_error(generate() + " --press 'adakv(simlayerkv)' --ratio 0.5", {"simlayerkv"});
  expect_one_line_error(generate() + " --press 'chunk(snapkv)' --ratio 0.5", {"chunk"});
}

TEST(PressCliErrors, OptionForAPressNotInTheExpression) {
  expect_one_line_error(generate() + " --press snapkv --ratio 0.5 --press-opt knorm.foo=1", {"no press 'knorm' in the expression 'snapkv'"});
  expect_one_line_error(generate() + " --press 'adakv(snapkv)' --ratio 0.5 --press-opt knorm.window_size=4", {"no press 'knorm'"});
  expect_one_line_error(generate() + " --press 'adakv(snapkv)' --ratio 0.5 --press-opt snapkv.foo=4", {"press 'snapkv' has no option 'foo'"});
}

TEST(PressCliErrors, RatioAndBudget) {
  for (const char* r : {"1", "1.5", "-0.1", "nan"})
    expect_one_line_error(generate() + " --press knorm --ratio " + r, {"--ratio"});
  expect_one_line_error(generate() + " --ratio 0.5", {"needs a press"});
  expect_one_line_error(generate() + " --press knorm --ratio 0.5 --press-opt budget=4", {"give either --ratio or an absolute budget"});
  expect_one_line_error(generate() + " --press knorm --ratio 0.5 --press-opt budget_bytes=4000", {"give either --ratio or an absolute budget"});
  expect_one_line_error(generate() + " --press knorm --press-opt budget=-3", {"budget"});
  expect_one_line_error(generate() + " --press knorm --press-opt budget=abc", {"budget"});
  expect_one_line_error(generate() + " --press knorm --press-opt budget_bytes=1", {"budget_bytes"});
  expect_one_line_error(generate() + " --press none --press-opt window_size=4", {"press 'none' has no options"});
}

TEST(PressCliErrors, SettingsCheckedWhenTheModelIsKnown) {
  // per_layer needs one ratio per layer of the model (stories260K: 5).
  expect_one_line_error(generate() + " --press 'per_layer(knorm)' --press-opt ratios=0.1:0.2", {"per_layer", "2 ratios"});
  expect_one_line_error(generate() + " --press 'per_layer(knorm)' --ratio 0.5 --press-opt ratios=0.1:0.2:0.3:0.4:0.5", {"per_layer"});
  // finch's window is the question: it needs one (-q), and sets window_size from it.
  expect_one_line_error(generate() + " --press 'finch(rerotate_keys=false)' --ratio 0.5", {"finch", "needs a question", "-q"});
  expect_one_line_error("generate -m " + test_paths::stories260k() +
                            " -p 'Once upon a time there was a little girl named Lily. She loved to play outside with her dog.' -n 2 -t 1"
                            " --press 'key_rerotation(adakv(snapkv(window_size=2)))' --ratio 0.5",
                        {"key_rerotation", "same number of slots"});
  expect_one_line_error("bench -m " + test_paths::stories260k() + " --ctx 64 --ratio 0.5 --press 'knorm(foo=1)'",
                        {"has no option 'foo'"});
}
