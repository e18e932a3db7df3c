from envstore.api.app import serve
from envstore.common.service_runtime import run_service

run_service("api", serve)
