// --method parsing for the AWQ family and its combinations with GPTQ.
#include <gtest/gtest.h>

#include "core/error.h"
#include "pipeline/awq_layer.h"

using namespace qshard;

TEST(AwqMethod, ParsesEveryMethod) {
  EXPECT_TRUE(parse_method("gptq").gptq);
  EXPECT_EQ(parse_method("rtn").scaling, ScalingMethod::None);
  EXPECT_FALSE(parse_method("rtn").gptq);
  EXPECT_EQ(parse_method("awq").scaling, ScalingMethod::Awq);
  EXPECT_EQ(parse_method("awq-joint").scaling, ScalingMethod::AwqJoint);
  EXPECT_EQ(parse_method("awq-dh").scaling, ScalingMethod::AwqDh);
  EXPECT_EQ(parse_method("smoothquant").scaling, ScalingMethod::SmoothQuant);
  for (const char* m : {"awq+gptq", "awq-joint+gptq", "smoothquant+gptq"}) {
    EXPECT_TRUE(parse_method(m).gptq) << m;
    EXPECT_NE(parse_method(m).scaling, ScalingMethod::None) << m;
  }
}

TEST(AwqMethod, RefusesReversedAndUnknown) {
  try {
    parse_method("gptq+awq");
    FAIL() << "gptq+awq accepted";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("awq+gptq"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line";
  }
  EXPECT_THROW(parse_method("gptq+smoothquant"), InputError);
  EXPECT_THROW(parse_method("awq-dh+gptq"), InputError);
  EXPECT_THROW(parse_method("awq+rtn"), InputError);
  EXPECT_THROW(parse_method("awq2"), InputError);
}
