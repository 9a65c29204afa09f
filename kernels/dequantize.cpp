#include "kernels/dequantize.h"
