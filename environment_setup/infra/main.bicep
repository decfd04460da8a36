// videoanom on Azure Machine Learning: the workspace, the resources it depends on, and the two
// compute clusters the pipelines run on. Deployed into one resource group by deploy.sh:
//
//   az deployment group create -g <rg> -f main.bicep -p @main.parameters.json
//
// Parameter defaults equal the AzureSettings defaults (ml_service/util/env_variables.py:
// AML_CPU_CLUSTER, AML_CPU_VM_SIZE, ...; tests/test_environment_setup.py checks that), so a
// deployment with defaults matches a .env that sets only the workspace coordinates.
//
// The location folders live in the workspace's default datastore (workspaceblobstore, the
// container Azure ML creates in the storage account below) under AML_DATASTORE_PATH; the
// master's records under AML_STATE_PATH in the same datastore. No secret is a parameter or an
// output: the clusters use their system-assigned managed identities, granted the roles below.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@description('Azure ML workspace name (AML_WORKSPACE_NAME).')
@minLength(3)
@maxLength(33)
param workspaceName string

@description('Region of every resource; deploy.sh creates the resource group in AZURE_LOCATION.')
param location string = resourceGroup().location

@description('CPU cluster name (AML_CPU_CLUSTER): data prep, scoring, classifier, registration, the master step.')
@minLength(2)
@maxLength(16)
param cpuClusterName string = 'cpu-cluster'

@description('CPU cluster VM size (AML_CPU_VM_SIZE).')
param cpuVmSize string = 'Standard_DS3_v2'

@description('CPU cluster minimum nodes (AML_CPU_MIN_NODES); 0 scales to zero when idle.')
@minValue(0)
param cpuMinNodes int = 0

@description('CPU cluster maximum nodes (AML_CPU_MAX_NODES).')
@minValue(1)
param cpuMaxNodes int = 4

@description('GPU cluster name (AML_GPU_CLUSTER): the PredNet training trials.')
@minLength(2)
@maxLength(16)
param gpuClusterName string = 'gpu-cluster'

@description('GPU cluster VM size (AML_GPU_VM_SIZE); needs GPU quota for its family in the region.')
param gpuVmSize string = 'Standard_NC4as_T4_v3'

@description('GPU cluster minimum nodes (AML_GPU_MIN_NODES); 0 scales to zero when idle.')
@minValue(0)
param gpuMinNodes int = 0

@description('GPU cluster maximum nodes (AML_GPU_MAX_NODES).')
@minValue(1)
param gpuMaxNodes int = 4

@description('VM priority of both clusters (AML_VM_PRIORITY): dedicated, or lowpriority (cheaper, can be preempted).')
@allowed([
  'dedicated'
  'lowpriority'
])
param vmPriority string = 'dedicated'

@description('Seconds an idle node waits before the cluster scales it down.')
@minValue(60)
param idleSecondsBeforeScaleDown int = 600

@description('Container registry SKU (environment images with CUDA are several GB; Standard includes more storage).')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param containerRegistrySku string = 'Basic'

@description('Key vault purge protection. Irreversible once on: a deleted vault then blocks its name for the retention period.')
param keyVaultPurgeProtection bool = false

@description('Optional: object id of a user, group or service principal (e.g. the CI identity) that runs `videoanom azure ...` and uploads data; granted AzureML Data Scientist on the workspace and Storage Blob Data Contributor on the storage account. Empty: none.')
param operatorPrincipalId string = ''

@description('Type of operatorPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Tags on every resource.')
param tags object = {
  project: 'videoanom'
}

// ---------------------------------------------------------------------------------------------
// Names and built-in roles
// ---------------------------------------------------------------------------------------------

var suffix = uniqueString(resourceGroup().id, workspaceName)
var storageAccountName = 'st${suffix}' // 3-24 lowercase letters and digits
var keyVaultName = 'kv-${suffix}' // 3-24 letters, digits, hyphens
var containerRegistryName = 'cr${suffix}' // 5-50 letters and digits
var logAnalyticsName = 'log-${workspaceName}'
var appInsightsName = 'appi-${workspaceName}'

// Built-in role definition ids (the same in every tenant).
var roleAzureMLDataScientist = subscriptionResourceId(
  'Microsoft.Authorization/roleDefinitions',
  'f6c7c914-8db3-469d-8ca1-694a8f32e121'
)
var roleStorageBlobDataContributor = subscriptionResourceId(
  'Microsoft.Authorization/roleDefinitions',
  'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
)
var roleAcrPull = subscriptionResourceId(
  'Microsoft.Authorization/roleDefinitions',
  '7f951dda-4ed3-4680-a7ca-43fe172d538d'
)

var amlVmPriority = vmPriority == 'lowpriority' ? 'LowPriority' : 'Dedicated'
var idleTime = 'PT${idleSecondsBeforeScaleDown}S'

// ---------------------------------------------------------------------------------------------
// Workspace dependencies
// ---------------------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  name: storageAccountName
  location: location
  tags: tags
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    // The workspace's system datastores (workspaceblobstore) authenticate with the account
    // key by default, so shared key access stays on; the identities below use Entra ID.
    allowSharedKeyAccess: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    encryption: {
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    // An overwritten or deleted upload can be recovered for a week.
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource keyVault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Access policies, managed by the workspace: it adds its own identity on creation.
    enableRbacAuthorization: false
    accessPolicies: []
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: keyVaultPurgeProtection ? true : null
    enabledForDeployment: false
    enabledForTemplateDeployment: false
    enabledForDiskEncryption: false
    publicNetworkAccess: 'Enabled'
  }
}

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2025-02-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
  }
}

resource containerRegistry 'Microsoft.ContainerRegistry/registries@2025-04-01' = {
  name: containerRegistryName
  location: location
  tags: tags
  sku: {
    name: containerRegistrySku
  }
  properties: {
    // No admin user (no registry password): the workspace builds images with its managed
    // identity and the clusters pull them with theirs (AcrPull below).
    adminUserEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

// ---------------------------------------------------------------------------------------------
// Workspace and compute clusters
// ---------------------------------------------------------------------------------------------

resource workspace 'Microsoft.MachineLearningServices/workspaces@2025-12-01' = {
  name: workspaceName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  properties: {
    friendlyName: workspaceName
    description: 'videoanom: a PredNet video anomaly detector per camera location'
    storageAccount: storage.id
    keyVault: keyVault.id
    applicationInsights: appInsights.id
    containerRegistry: containerRegistry.id
    hbiWorkspace: false
    publicNetworkAccess: 'Enabled'
  }
  dependsOn: [
    blobService
  ]
}

resource cpuCluster 'Microsoft.MachineLearningServices/workspaces/computes@2025-12-01' = {
  parent: workspace
  name: cpuClusterName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    computeType: 'AmlCompute'
    description: 'videoanom CPU steps and the master step'
    properties: {
      osType: 'Linux'
      vmSize: cpuVmSize
      vmPriority: amlVmPriority
      enableNodePublicIp: true
      remoteLoginPortPublicAccess: 'Disabled'
      scaleSettings: {
        minNodeCount: cpuMinNodes
        maxNodeCount: cpuMaxNodes
        nodeIdleTimeBeforeScaleDown: idleTime
      }
    }
  }
}

resource gpuCluster 'Microsoft.MachineLearningServices/workspaces/computes@2025-12-01' = {
  parent: workspace
  name: gpuClusterName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    computeType: 'AmlCompute'
    description: 'videoanom PredNet training trials'
    properties: {
      osType: 'Linux'
      vmSize: gpuVmSize
      vmPriority: amlVmPriority
      enableNodePublicIp: true
      remoteLoginPortPublicAccess: 'Disabled'
      scaleSettings: {
        minNodeCount: gpuMinNodes
        maxNodeCount: gpuMaxNodes
        nodeIdleTimeBeforeScaleDown: idleTime
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Role assignments: what the clusters' identities (and the optional operator) may do
// ---------------------------------------------------------------------------------------------
// Names and loop ranges must be known when the deployment starts, so they use the cluster
// names, not the principal ids (which exist only once the clusters do).

var clusterNames = [
  cpuClusterName
  gpuClusterName
]

// Submit and read jobs, publish pipelines, register models: the master step, running on the
// CPU cluster, submits each location's training pipeline as this identity.
resource clusterDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (clusterName, i) in clusterNames: {
    name: guid(workspace.id, clusterName, roleAzureMLDataScientist)
    scope: workspace
    properties: {
      roleDefinitionId: roleAzureMLDataScientist
      principalId: i == 0 ? cpuCluster.identity.principalId : gpuCluster.identity.principalId
      principalType: 'ServicePrincipal'
      description: 'videoanom: ${clusterName} submits and tracks jobs in the workspace'
    }
  }
]

// Read the location folders and read/write the master's records in the datastore's account.
resource clusterBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (clusterName, i) in clusterNames: {
    name: guid(storage.id, workspace.id, clusterName, roleStorageBlobDataContributor)
    scope: storage
    properties: {
      roleDefinitionId: roleStorageBlobDataContributor
      principalId: i == 0 ? cpuCluster.identity.principalId : gpuCluster.identity.principalId
      principalType: 'ServicePrincipal'
      description: 'videoanom: ${clusterName} reads and writes the datastore'
    }
  }
]

// Pull the environment image from a registry without an admin user.
resource clusterAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (clusterName, i) in clusterNames: {
    name: guid(containerRegistry.id, workspace.id, clusterName, roleAcrPull)
    scope: containerRegistry
    properties: {
      roleDefinitionId: roleAcrPull
      principalId: i == 0 ? cpuCluster.identity.principalId : gpuCluster.identity.principalId
      principalType: 'ServicePrincipal'
      description: 'videoanom: ${clusterName} pulls the job environment image'
    }
  }
]

resource operatorDataScientist 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(workspace.id, operatorPrincipalId, roleAzureMLDataScientist)
  scope: workspace
  properties: {
    roleDefinitionId: roleAzureMLDataScientist
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'videoanom: operator publishes, schedules and submits pipelines'
  }
}

resource operatorBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(storage.id, operatorPrincipalId, roleStorageBlobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: roleStorageBlobDataContributor
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    description: 'videoanom: operator uploads location folders'
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs: the values .env needs (deploy.sh prints them); no secrets
// ---------------------------------------------------------------------------------------------

output subscriptionId string = subscription().subscriptionId
output resourceGroupName string = resourceGroup().name
output workspaceName string = workspace.name
output location string = location
output storageAccountName string = storage.name
output containerRegistryName string = containerRegistry.name
output keyVaultName string = keyVault.name
output cpuClusterName string = cpuCluster.name
output gpuClusterName string = gpuCluster.name
output cpuClusterPrincipalId string = cpuCluster.identity.principalId
output gpuClusterPrincipalId string = gpuCluster.identity.principalId
