//! Faithful mock servers of the marketplaces (Taobao TOP, Doudian, Xiaohongshu).
