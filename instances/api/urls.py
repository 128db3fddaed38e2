from rest_framework.routers import DefaultRouter

from instances.api.views import InstanceViewSet, IssueViewSet, ProjectViewSet

router = DefaultRouter()
router.register("instances", InstanceViewSet, basename="instance")
router.register("tracker/projects", ProjectViewSet, basename="tracker-project")
router.register("tracker/issues", IssueViewSet, basename="tracker-issue")

urlpatterns = router.urls
