#include "decimal.h"

namespace spillagg {

// The rungs, compiled once (decimal.h declares them extern).
template struct DecimalT<kNumericRungWords[0]>;
template struct DecimalT<kNumericRungWords[1]>;
template struct DecimalT<kNumericRungWords[2]>;

}  // namespace spillagg
