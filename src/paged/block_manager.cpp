#include "ioattn/block_manager.hpp"
