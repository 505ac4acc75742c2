// ioattn: the KV-cache block manager (being written; see issue 5).
#pragma once
