// CUDA emulator stand-in for cub/device/device_reduce.cuh.
#pragma once
#include "cub_emulated.h"
