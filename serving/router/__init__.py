"""`ondeck route`: a REST + gRPC traffic router in front of the variants of one model.

config.py      the router config, the contract shared with the operator and the local runtime
choose.py      pure routing decisions: header rules, sticky hashing, exact weighted split, mirroring
upstream.py    replicas: keep-alive HTTP pools, gRPC channels, passive health
forward.py     one config made runnable (Routes) and Exchange: endpoint choice, retry, ejection, fallback
http_front.py  the REST reverse proxy (asyncio + httptools) and the admin endpoints' wiring
grpc_front.py  the gRPC front-end (bytes pass through)
shadow.py      mirroring off the client's path, paired comparison, the pair log
compare.py     reading predictions out of answers and comparing two of them (pure)
metrics.py     the Prometheus series of docs/metrics.md (a plain store workers can sum)
server.py      the process: current routes, hot reload, admin endpoints, startup and shutdown
workers.py     --workers N: a supervisor and worker processes sharing ports, metrics and reloads
"""
