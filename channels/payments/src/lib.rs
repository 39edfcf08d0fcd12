//! WeChat Pay v3 and Alipay: signing, verification, callbacks, and their mock servers.
