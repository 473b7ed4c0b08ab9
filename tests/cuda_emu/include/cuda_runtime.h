// CUDA emulator: the runtime API comes from runtime.h (included first).
#pragma once
#include "../runtime.h"
