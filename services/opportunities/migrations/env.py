from crmkit.migrations import run_env
from services.opportunities.db import Base

run_env(Base.metadata)
