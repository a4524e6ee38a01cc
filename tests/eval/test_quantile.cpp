#include <gtest/gtest.h>

#include <cmath>

#include "eval/eval.h"

using namespace qshard;

TEST(Quantile, MatchesNumpyLinearInterpolation) {
  const std::vector<double> v = {1, 2, 3, 4, 10};
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.5), 3.0);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 1.0), 10.0);
  EXPECT_DOUBLE_EQ(quantile_sorted(v, 0.99), 4.0 + 0.96 * 6.0);  // numpy.percentile(v, 99)
  EXPECT_DOUBLE_EQ(quantile_sorted({2, 4}, 0.5), 3.0);
  EXPECT_TRUE(std::isnan(quantile_sorted({}, 0.5)));
}

TEST(EvalResult, JsonHasProtocolKeys) {
  EvalResult r;
  r.ppl = 12.5;
  r.tokens = 255;
  r.windows = 1;
  const std::string j = r.to_json();
  for (const char* key : {"\"ppl\": 12.5", "\"tokens\": 255", "\"windows\": 1", "\"kld_mean\": null",
                          "\"kld_median\": null", "\"kld_p99\": null", "\"kld_max\": null",
                          "\"top1_agree\": null"})
    EXPECT_NE(j.find(key), std::string::npos) << key << " in " << j;
}
