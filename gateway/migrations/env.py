from crmkit.migrations import run_env
from gateway.db import Base

run_env(Base.metadata)
