// Must not compile: a shortcut block whose MoE slot holds a dense FFN (a feed_forward without router()). The test
// expects the static_assert's message.
#include "ngemb/ffn/swiglu.hpp"
#include "ngemb/model/blocks.hpp"

template class ngemb::shortcut_block<ngemb::attention<>, ngemb::swiglu<>, ngemb::swiglu<>>;
